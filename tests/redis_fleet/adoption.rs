//! A replica killed while a call is at Bedrock: its lease lapses, another
//! replica adopts the call's hold, charges it once and logs it, and the
//! ledger in Redis equals the survivors' logs. Also when the hold expired
//! first, when Redis went away meanwhile, and when another tenant's data
//! cannot be read.

use std::time::Duration;

use tollgate_host::gateway::invocation_log::{InvocationLog, InvocationRecord};

use crate::admin_api::spent;
use crate::support::gateway::{Options, TenantSpec, TestGateway, the_restored_charge, timed_call};
use crate::support::redis::RedisServer;
use crate::support::upstream;
use crate::support::watch::until_files;

fn replica_options(server: &RedisServer, tenants: &[TenantSpec], upstream_url: Option<String>) -> Options {
    Options {
        tenants: tenants.to_vec(),
        upstream_url,
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"adopt\"\nlease-ms = 1500\n",
            server.url()
        ),
        ..Options::default()
    }
}

/// Two replicas of `tenants` on `server`; a call of `caller` through the
/// second reaches a silent upstream, and that replica is killed for good.
/// Returns the survivor.
async fn a_replica_killed_during_a_call(
    server: &RedisServer,
    tenants: &[TenantSpec],
    caller: &TenantSpec,
) -> TestGateway {
    let survivor = TestGateway::start(replica_options(server, tenants, None)).await;
    let (url, arrived, silent) = upstream::silent().await;
    let doomed = TestGateway::start(replica_options(server, tenants, Some(url))).await;

    let client = doomed.sigv4_client(caller);
    let call = tokio::spawn(async move { timed_call(&client).await });
    arrived.await.expect("the call reached the upstream");
    assert_eq!(survivor.tenant_state(caller.id).await["open-reservations"], 1);

    // SIGKILL, and the replica is gone for good: nobody will settle the call.
    drop(doomed);
    let failed = call.await.expect("join").expect_err("the caller lost its call");
    assert_eq!(failed.0, 0, "no answer was sent: {failed:?}");
    silent.await.expect("the upstream saw the replica go");
    survivor
}

/// The survivor's records of adopted holds, once there is one, watched by
/// inotify.
async fn the_adopted_record(survivor: &TestGateway) -> Vec<InvocationRecord> {
    let log = survivor.log_path();
    until_files(
        vec![log.clone()],
        Duration::from_secs(30),
        "the adopted hold's record",
        move || {
            let records: Vec<_> = InvocationLog::read_all(&log)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.tollgate.request_id.starts_with("tollgate-restored-"))
                .collect();
            (!records.is_empty()).then_some(records)
        },
    )
    .await
}

/// The one adopted charge is the ledger's spend, `reconcile` agrees, and the
/// survivor is healthy.
async fn charged_once(survivor: &TestGateway, tenant: &str) -> u64 {
    let records = the_adopted_record(survivor).await;
    let charged = the_restored_charge(&records);
    assert_eq!(records[0].tollgate.tenant, tenant);
    let state = survivor.settled(tenant).await;
    assert_eq!(state["spent-nano-usd"], charged, "{state}");
    assert_eq!(state["open-reservations"], 0, "{state}");
    survivor.reconcile().await;
    assert_eq!(survivor.healthz().await, 200);
    charged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_of_a_killed_replica_is_adopted_charged_once_and_logged() {
    let server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let survivor = a_replica_killed_during_a_call(&server, std::slice::from_ref(&acme), &acme).await;
    charged_once(&survivor, "acme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_hold_that_expired_before_its_lease_lapsed_is_charged_all_the_same() {
    let server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let survivor = a_replica_killed_during_a_call(&server, std::slice::from_ref(&acme), &acme).await;

    // The hold outlives its TTL before the lease lapses (a TTL shorter than
    // lease-ms, a clock that jumped): its expiry is moved into the past.
    let ids = server.cli(&["ZRANGE", "adopt:{acme}:exp", "0", "-1"]);
    assert_eq!(ids.lines().count(), 1, "one open hold: {ids:?}");
    assert_eq!(server.cli(&["ZADD", "adopt:{acme}:exp", "1", &ids]), "0");
    // The survivor's next look at the tenant returns the hold to the budget...
    let state = survivor.tenant_state("acme").await;
    assert_eq!(state["open-reservations"], 0, "{state}");
    assert_eq!(server.cli(&["HLEN", "adopt:{acme}:expired"]), "1");

    // ...and the call, which may have run, is still charged once its owner is gone.
    charged_once(&survivor, "acme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_hold_is_adopted_once_redis_is_back_from_an_outage() {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let survivor = a_replica_killed_during_a_call(&server, std::slice::from_ref(&acme), &acme).await;

    // Redis goes away before the lease lapses (1.5 s) and comes back on its
    // append-only file. The survivor adopts only after Redis answered it for
    // a whole lease, and charges the hold once.
    server.kill();
    let refused = timed_call(&survivor.sigv4_client(&acme))
        .await
        .expect_err("fail closed");
    assert_eq!(refused.0, 503, "{refused:?}");
    let (status, body) = survivor.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(survivor.healthz().await, 200);
    server.restart();
    charged_once(&survivor, "acme").await;
    let stderr = std::fs::read_to_string(survivor.dir().join("stderr.log")).expect("stderr");
    assert_eq!(stderr.matches("adopted the holds of replicas").count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_data_cannot_be_read_does_not_keep_another_tenants_hold_from_adoption() {
    let server = RedisServer::start();
    // "aaa" comes first in the pass over tenants.
    let broken = TenantSpec::new("aaa", "allow-all");
    let acme = TenantSpec::new("acme", "allow-all");
    let tenants = [broken, acme.clone()];
    let survivor = a_replica_killed_during_a_call(&server, &tenants, &acme).await;

    // Another tool wrote over aaa's open holds with a value of the wrong type.
    assert_eq!(server.cli(&["SET", "adopt:{aaa}:open", "not a hash"]), "OK");
    the_adopted_record(&survivor).await;
    let stderr = std::fs::read_to_string(survivor.dir().join("stderr.log")).expect("stderr");
    assert!(
        stderr.contains("could not look for holds of lapsed replicas"),
        "{stderr}"
    );
    assert!(stderr.contains("WRONGTYPE"), "{stderr}");

    // Mended, so that `reconcile` can read every tenant's ledger.
    assert_eq!(server.cli(&["DEL", "adopt:{aaa}:open"]), "1");
    charged_once(&survivor, "acme").await;
}

/// A call Redis held is answered while Redis is away, so its settle is kept
/// in its replica's journal, and that replica is killed. Its lease lapses;
/// another replica adopts the hold and charges it in full. When the first
/// replica starts again, its kept settle replaces that charge: the call is
/// charged its usage, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_holds_charge_is_replaced_by_its_owners_kept_usage() {
    let usage = an_adopted_hold_meets_its_owners_kept_outcome(upstream::CONVERSE_OK).await;
    assert!(usage > 0);
}

/// As above, for a call Bedrock throttled: it never ran, and the adopter's
/// charge of its hold is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_holds_charge_is_undone_by_its_owners_kept_release() {
    let usage = an_adopted_hold_meets_its_owners_kept_outcome(upstream::THROTTLED).await;
    assert_eq!(usage, 0);
}

/// The shared body; returns what the call cost by its owner's record.
async fn an_adopted_hold_meets_its_owners_kept_outcome(reply: (u16, &'static str)) -> u64 {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let tenants = std::slice::from_ref(&acme);
    let adopter = TestGateway::start(replica_options(&server, tenants, None)).await;
    let (url, arrived, answer, answered) = upstream::gated(reply).await;
    let mut owner = TestGateway::start(replica_options(&server, tenants, Some(url))).await;
    let client = owner.sigv4_client(&acme);
    let call = tokio::spawn(async move { timed_call(&client).await });
    arrived.await.expect("the call reached the upstream, its hold in Redis");
    server.kill();
    answer.send(()).expect("the upstream waits");
    let served = call.await.expect("join");
    answered.await.expect("the upstream answered");
    let records = owner.wait_for_records(1).await;
    let call_record = records[0].tollgate.clone();
    assert_eq!(served.is_ok(), reply.0 == 200, "{served:?}");
    owner.kill();

    server.restart();
    let adopted = the_restored_charge(&the_adopted_record(&adopter).await);
    assert_eq!(adopted, call_record.reserved_nano_usd);
    assert_eq!(spent(&adopter).await, (adopted, 1), "the adopter charged the hold");

    owner.start_again().await;
    let (status, text) = owner.readyz_within(10_000).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "ready\n"),
        "the kept outcome was written"
    );
    let usage = call_record.cost_nano_usd;
    let calls = u64::from(usage > 0);
    assert_eq!(spent(&owner).await, (usage, calls), "charged what the call cost, once");
    assert_eq!(spent(&adopter).await, (usage, calls));
    let stderr = std::fs::read_to_string(owner.dir().join("stderr.log")).expect("stderr");
    assert!(stderr.contains("replaced that charge"), "{stderr}");
    // The owner's log and the ledger agree; over both replicas' logs, the
    // adopter's record of the hold is superseded by the call's own.
    owner.reconcile().await;
    let report = owner.reconcile_with(&[owner.log_path(), adopter.log_path()]).await;
    assert!(report.contains("left out 1 restored charges"), "{report}");
    // So does the report: the tenant spent what the ledger says, in one call.
    for logs in [
        [owner.log_path(), adopter.log_path()],
        [adopter.log_path(), owner.log_path()],
    ] {
        let report = owner.report_with(&logs).await;
        let total = &report["total"];
        assert_eq!(
            (
                &total["spend_nano_usd"],
                &total["calls"],
                &report["superseded_restored"]
            ),
            (&serde_json::json!(usage), &serde_json::json!(1), &serde_json::json!(1)),
            "{report:#}"
        );
    }

    // Once: the owner's next start and the adopter's view change nothing.
    owner.restart().await;
    let (status, _) = owner.readyz_within(10_000).await;
    assert_eq!(status, 200);
    assert_eq!(spent(&owner).await, (usage, calls));
    assert_eq!(adopter.healthz().await, 200);
    usage
}

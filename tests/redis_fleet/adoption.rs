//! A replica killed while a call is at Bedrock: its lease lapses, another
//! replica adopts the call's hold, charges it once and logs it, and the
//! ledger in Redis equals the survivors' logs.

use std::time::Duration;

use crate::support::gateway::{Options, TenantSpec, TestGateway, the_restored_charge, timed_call};
use crate::support::redis::RedisServer;
use crate::support::upstream;
use crate::support::watch::until_files;

fn replica_options(server: &RedisServer, tenant: &TenantSpec, upstream_url: Option<String>) -> Options {
    Options {
        tenants: vec![tenant.clone()],
        upstream_url,
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"adopt\"\nlease-ms = 1500\n",
            server.url()
        ),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_of_a_killed_replica_is_adopted_charged_once_and_logged() {
    let server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let survivor = TestGateway::start(replica_options(&server, &acme, None)).await;
    let (url, arrived, silent) = upstream::silent().await;
    let doomed = TestGateway::start(replica_options(&server, &acme, Some(url))).await;

    let client = doomed.sigv4_client(&acme);
    let caller = tokio::spawn(async move { timed_call(&client).await });
    arrived.await.expect("the call reached the upstream");
    assert_eq!(survivor.tenant_state("acme").await["open-reservations"], 1);

    // SIGKILL, and the replica is gone for good: nobody will settle the call.
    drop(doomed);
    let failed = caller.await.expect("join").expect_err("the caller lost its call");
    assert_eq!(failed.0, 0, "no answer was sent: {failed:?}");
    silent.await.expect("the upstream saw the replica go");

    // Once the lease lapses, the survivor adopts the hold and logs its charge.
    let log = survivor.log_path();
    let records = until_files(
        vec![log.clone()],
        Duration::from_secs(30),
        "the adopted hold's record",
        {
            move || {
                let records = tollgate_host::gateway::invocation_log::InvocationLog::read_all(&log).unwrap_or_default();
                (!records.is_empty()).then_some(records)
            }
        },
    )
    .await;
    let charged = the_restored_charge(&records);
    let state = survivor.settled("acme").await;
    assert_eq!(state["spent-nano-usd"], charged, "{state}");
    survivor.reconcile().await;

    assert_eq!(survivor.healthz().await, 200);
}

//! `fail-open-with-allowance`, and the replica is killed during the outage:
//! the calls it let through on its allowance are in its journal, and at its
//! next start each is charged once: a finished call at its usage, a call
//! still at Bedrock at its hold. Redis' ledger then equals the logs. The
//! journal also keeps the outcomes of calls Redis held that could not be
//! written, failing open or closed.

use aws_sdk_bedrockruntime::Client;

use crate::admin_api::spent;
use crate::support::gateway::{Options, TenantSpec, TestGateway, the_restored_charge, timed_call};
use crate::support::redis::RedisServer;
use crate::support::upstream;

fn fail_open(server: &RedisServer, tenants: &[TenantSpec], upstream_url: Option<String>) -> Options {
    on_redis(server, tenants, upstream_url, "fail-open-with-allowance")
}

fn on_redis(server: &RedisServer, tenants: &[TenantSpec], upstream_url: Option<String>, mode: &str) -> Options {
    Options {
        tenants: tenants.to_vec(),
        upstream_url,
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"journal\"\nretry-ms = 100\n\
             failure-mode = \"{mode}\"\nallowance-usd = \"0.01\"\n",
            server.url()
        ),
        ..Options::default()
    }
}

async fn calls(client: &Client, n: usize) {
    for _ in 0..n {
        timed_call(client).await.expect("admitted on the allowance");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_kept_for_redis_by_a_killed_replica_are_written_once_at_its_next_start() {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let mut gw = TestGateway::start(fail_open(&server, std::slice::from_ref(&acme), None)).await;
    let client = gw.sigv4_client(&acme);
    calls(&client, 1).await;
    gw.wait_for_records(1).await;
    let before = spent(&gw).await;
    assert_eq!(before.1, 1);

    server.kill();
    calls(&client, 3).await;
    let records = gw.wait_for_records(4).await;
    let outage: u64 = records[1..].iter().map(|r| r.tollgate.cost_nano_usd).sum();
    assert!(outage > 0);

    // SIGKILL with the three charges kept for Redis, and started again
    // while Redis is still away: on its local copy of the tenants. It knows
    // no figures of acme's spend in this process, so it admits nothing on
    // the allowance; it writes what the killed process kept once Redis is back.
    gw.kill();
    gw.start_again().await;
    let refused = timed_call(&gw.sigv4_client(&acme))
        .await
        .expect_err("acme's spend is unknown here");
    assert_eq!(refused.0, 503, "{refused:?}");
    server.restart();
    let (status, text) = gw.readyz_within(10_000).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "ready\n"),
        "the kept charges were written"
    );
    assert_eq!(spent(&gw).await, (before.0 + outage, 4), "each charge once");
    gw.reconcile().await;

    // Written once: another restart finds the journal empty.
    gw.restart().await;
    let (status, _) = gw.readyz_within(10_000).await;
    assert_eq!(status, 200);
    assert_eq!(spent(&gw).await, (before.0 + outage, 4));
    assert_eq!(
        gw.records().len(),
        5,
        "no restored charge (the fifth is the refused call)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_at_bedrock_when_a_replica_is_killed_during_an_outage_is_charged_its_hold_once() {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let (url, arrived, silent) = upstream::silent().await;
    let mut gw = TestGateway::start(fail_open(&server, std::slice::from_ref(&acme), Some(url))).await;
    // Redis has seen the tenant, then goes away.
    assert_eq!(spent(&gw).await, (0, 0));
    server.kill();

    let client = gw.sigv4_client(&acme);
    let caller = tokio::spawn(async move { timed_call(&client).await });
    arrived.await.expect("the call reached the upstream on the allowance");
    gw.kill();
    let failed = caller.await.expect("join").expect_err("the caller lost its call");
    assert_eq!(failed.0, 0, "no answer was sent: {failed:?}");
    silent.await.expect("the upstream saw the gateway go");

    // At its next start, once Redis is back, the call is charged its hold
    // and logged as such.
    server.restart();
    gw.start_again().await;
    let records = gw.wait_for_records(1).await;
    let charged = the_restored_charge(&records);
    assert_eq!(spent(&gw).await, (charged, 1));
    gw.reconcile().await;

    gw.restart().await;
    assert_eq!(gw.healthz().await, 200);
    assert_eq!(spent(&gw).await, (charged, 1), "charged once");
    assert_eq!(gw.records().len(), 1);
}

/// A call Redis held, answered while Redis is away: its charge is kept for
/// Redis, and in the journal. The replica is killed before Redis is back;
/// at its next start the call is charged its usage, not its hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_kept_for_a_hold_redis_took_is_written_at_usage_after_a_kill() {
    a_kept_charge_is_written_at_usage_after_a_kill("fail-open-with-allowance").await;
}

/// As above, failing closed: no call is admitted while Redis is away, and
/// the journal still keeps what calls already at Bedrock owe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_kept_while_failing_closed_is_written_at_usage_after_a_kill() {
    a_kept_charge_is_written_at_usage_after_a_kill("fail-closed").await;
}

async fn a_kept_charge_is_written_at_usage_after_a_kill(mode: &str) {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let (url, arrived, answer, answered) = upstream::gated(upstream::CONVERSE_OK).await;
    let mut gw = TestGateway::start(on_redis(&server, std::slice::from_ref(&acme), Some(url), mode)).await;
    let client = gw.sigv4_client(&acme);
    let caller = tokio::spawn(async move { timed_call(&client).await });
    arrived.await.expect("the call reached the upstream, its hold in Redis");
    server.kill();
    answer.send(()).expect("the upstream waits");
    caller.await.expect("join").expect("served: the charge is kept");
    answered.await.expect("the upstream answered");
    let records = gw.wait_for_records(1).await;
    let usage = records[0].tollgate.cost_nano_usd;
    assert!(
        0 < usage && usage < records[0].tollgate.reserved_nano_usd,
        "{:?}",
        records[0].tollgate
    );

    gw.kill();
    server.restart();
    gw.start_again().await;
    let (status, text) = gw.readyz_within(10_000).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"), "the kept charge was written");
    assert_eq!(spent(&gw).await, (usage, 1), "charged its usage, once, not its hold");
    assert_eq!(gw.records().len(), 1, "no restored charge of its hold");
    gw.reconcile().await;
}

/// A call Redis held that Bedrock throttled, so never ran, while Redis is
/// away: its release is kept for Redis, and in the journal. The replica is
/// killed before Redis is back; at its next start the hold is released, not
/// adopted and charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_kept_for_a_hold_redis_took_is_written_after_a_kill() {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let (url, arrived, answer, answered) = upstream::gated(upstream::THROTTLED).await;
    let mut gw = TestGateway::start(fail_open(&server, std::slice::from_ref(&acme), Some(url))).await;
    let client = gw.sigv4_client(&acme);
    let caller = tokio::spawn(async move { timed_call(&client).await });
    arrived.await.expect("the call reached the upstream, its hold in Redis");
    server.kill();
    answer.send(()).expect("the upstream waits");
    let refused = caller.await.expect("join").expect_err("throttled");
    assert_eq!(refused.0, 429, "{refused:?}");
    answered.await.expect("the upstream answered");
    let records = gw.wait_for_records(1).await;
    assert_eq!(records[0].tollgate.cost_nano_usd, 0, "{:?}", records[0].tollgate);
    assert_eq!(records[0].tollgate.charged_from, "released", "kept, not failed");

    gw.kill();
    server.restart();
    gw.start_again().await;
    let (status, text) = gw.readyz_within(10_000).await;
    assert_eq!(
        (status, text.as_str()),
        (200, "ready\n"),
        "the kept release was written"
    );
    let tenant = gw.tenant_state("acme").await;
    assert_eq!(tenant["open-reservations"], 0, "{tenant}");
    assert_eq!(tenant["reserved-nano-usd"], 0, "{tenant}");
    assert_eq!(spent(&gw).await, (0, 0), "nothing charged");
    assert_eq!(gw.records().len(), 1, "no restored charge of its hold");
}

//! A Redis near its `maxmemory`: the replica's probe reads `INFO memory`
//! and says so (a warning in the log, and `RedisStore::memory`) before a
//! full Redis refuses new holds; readiness does not change.

use std::time::Duration;

use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, LedgerStore, RedisMemory, RedisSettings, RedisStore, ReserveRequest, TenantLimits,
};
use tollgate_host::money::NanoUsd;

use crate::support::gateway::{Options, TenantSpec, TestGateway, timed_call};
use crate::support::redis::RedisServer;
use crate::support::watch::{until_files, until_notified};

/// Waits, probe by probe, until the store's view of Redis' memory satisfies `wanted`.
async fn memory_until(store: &RedisStore, wanted: impl Fn(&RedisMemory) -> bool) -> RedisMemory {
    let signal = store.health_signal().expect("the Redis store signals each probe");
    until_notified(
        signal,
        Duration::from_secs(30),
        "the probe sees Redis' memory so",
        || store.memory().filter(|m| wanted(m)),
    )
    .await
}

/// Sets `maxmemory` just above what Redis uses, once about 10 MB of
/// padding make that steady: a connection's buffers coming and going then
/// move it by a few percent, never below nine tenths of the limit.
fn nearly_full(server: &RedisServer) {
    let pad = "for i = 1, 100000 do redis.call('SET', 'pad:' .. i, string.rep('x', 100)) end return 1";
    assert_eq!(server.cli(&["EVAL", pad, "0"]), "1");
    let info = server.cli(&["INFO", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    let max = used * 103 / 100;
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", &max.to_string()]), "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_near_its_maxmemory_is_seen_before_it_is_full_and_readiness_holds() {
    let server = RedisServer::start();
    let store = RedisStore::connect(RedisSettings {
        url: server.url(),
        key_prefix: "memory".into(),
        ..RedisSettings::default()
    })
    .expect("connect");
    let calm = memory_until(&store, |m| m.max == 0).await;
    assert!(!calm.pressed() && calm.used > 0, "{calm:?}");

    nearly_full(&server);
    let pressed = memory_until(&store, |m| m.max > 0).await;
    assert!(pressed.pressed(), "{pressed:?}");
    store.health().expect("still ready: nothing is refused yet");

    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    let calm = memory_until(&store, |m| m.max == 0).await;
    assert!(!calm.pressed(), "{calm:?}");
}

/// Through `tollgate serve`: the warning reaches the operator's log, and
/// the replica stays ready and keeps serving calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_warns_in_its_log_when_redis_nears_its_maxmemory() {
    let server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let replica = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"memory\"\n",
            server.url()
        ),
        ..Options::default()
    })
    .await;
    nearly_full(&server);
    let stderr = replica.dir().join("stderr.log");
    let line = until_files(
        vec![stderr.clone()],
        Duration::from_secs(30),
        "the replica warns of Redis' memory",
        move || {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            log.lines()
                .find(|l| l.contains("near its maxmemory"))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(
        line.contains("maxmemory_bytes") && line.contains("raise maxmemory"),
        "{line}"
    );
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    let (status, text) = replica.readyz_within(10_000).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
    timed_call(&replica.sigv4_client(&acme)).await.expect("served");
}

/// A managed Redis may refuse `INFO` and `ROLE` to the gateway's user: the
/// store is then not watched for memory, stays ready, and keeps the books.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_info_and_role_is_not_watched_and_keeps_the_books() {
    let server = RedisServer::start();
    assert_eq!(server.cli(&["ACL", "SETUSER", "default", "-info", "-role"]), "OK");
    assert!(
        server.cli(&["INFO", "memory"]).contains("NOPERM"),
        "the ACL refuses INFO"
    );
    let store = RedisStore::connect(RedisSettings {
        url: server.url(),
        key_prefix: "no-info".into(),
        ..RedisSettings::default()
    })
    .expect("connect");
    // Three probes: each asks for INFO and ROLE and is refused both.
    let signal = store.health_signal().expect("the Redis store signals each probe");
    let mut probes = 0;
    until_notified(signal, Duration::from_secs(30), "three probes", || {
        probes += 1;
        (probes > 3).then_some(())
    })
    .await;
    assert_eq!(store.memory(), None, "nothing was read, so nothing is claimed");
    store.health().expect("ready: a refused INFO or ROLE is no outage");

    let remote = store.remote().expect("a remote store");
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let now = 1_760_000_000_000;
    let request = ReserveRequest {
        cost: NanoUsd::from_cents(2),
        ceiling: None,
        tokens: 10,
        now_ms: now,
    };
    let held = remote.reserve(&tenant, &limits, request, 600_000).await.expect("held");
    let actual = Actual {
        cost: NanoUsd::from_cents(1),
        tokens: 5,
    };
    remote
        .settle(&tenant, &limits, held.id, actual, now)
        .await
        .expect("settled");
    let state = remote.load(&tenant, &limits, now).await.expect("read");
    assert_eq!((state.spent, state.reserved), (NanoUsd::from_cents(1), NanoUsd::ZERO));
}

//! The Redis store keeps the books exactly as the in-memory store does, holds
//! one budget and one RPM window for every replica, and loses no charge when
//! Redis goes away.

use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, LedgerError, LedgerStore, MemoryStore, Period, RedisSettings, RedisStore, ReservationId, ReserveError,
    ReserveRequest, StoreError, TenantLimits,
};
use tollgate_host::money::NanoUsd;

use crate::support::redis::RedisServer;

fn store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(RedisSettings {
        url: server.url(),
        key_prefix: prefix.into(),
        timeout: Duration::from_millis(500),
        retry_for: Duration::from_millis(300),
        lease: Duration::from_secs(10),
        allowance: None,
        journal: None,
    })
    .expect("connect")
}

/// A small deterministic generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The same random operations, clock jumps across minutes, expiries and
/// daily periods in a time zone included, give the same answers from Redis
/// as from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_exactly_as_the_memory_store_does() {
    let server = RedisServer::start();
    // A 20-minute TTL, and one of 20 s so holds expire (and late settles land) inside their own minute.
    for (seed, tz, ttl) in [
        (7u64, Tz::America__New_York, 20 * 60 * 1000),
        (11, Tz::Europe__Berlin, 20 * 60 * 1000),
        (13, Tz::UTC, 20 * 60 * 1000),
        (17, Tz::Asia__Kolkata, 20_000),
    ] {
        let redis = store(&server, &format!("diff{seed}"));
        let memory = MemoryStore::new();
        let tenant = TenantId::new("acme").unwrap();
        let limits = TenantLimits {
            budget: NanoUsd::from_cents(500),
            period: Period::Daily,
            time_zone: tz,
            rpm: Some(12),
            tpm: Some(60_000),
            included_tokens: 1_000,
        };
        let mut rng = Rng(seed);
        // Shortly before midnight in New York in March, so periods and a DST change are crossed.
        let mut now: u64 = 1_741_500_000_000;
        // Memory spends an id on a refused hold too, Redis only on a granted one: pairs.
        let mut issued: Vec<(ReservationId, ReservationId)> = Vec::new();
        let same = |a: String, b: String, (ra, rb): (ReservationId, ReservationId)| {
            (
                a.replace(&format!("ReservationId({})", ra.0), "ReservationId(_)"),
                b.replace(&format!("ReservationId({})", rb.0), "ReservationId(_)"),
            )
        };
        for step in 0..600 {
            let (a, b) = match rng.below(10) {
                0..=3 => {
                    let cost = NanoUsd(rng.below(40_000_000));
                    let request = ReserveRequest {
                        cost,
                        ceiling: (rng.below(3) == 0).then(|| NanoUsd(cost.get() + rng.below(20_000_000))),
                        tokens: rng.below(9_000),
                        now_ms: now,
                    };
                    let a = LedgerStore::reserve(&redis, &tenant, &limits, request, ttl);
                    let b = memory.reserve(&tenant, &limits, request, ttl);
                    match (&a, &b) {
                        (Ok(ra), Ok(rb)) => {
                            issued.push((ra.id, rb.id));
                            same(format!("{a:?}"), format!("{b:?}"), (ra.id, rb.id))
                        }
                        _ => (format!("{a:?}"), format!("{b:?}")),
                    }
                }
                4..=5 if !issued.is_empty() => {
                    let ids = issued[rng.below(issued.len() as u64) as usize];
                    let actual = Actual {
                        cost: NanoUsd(rng.below(60_000_000)),
                        tokens: rng.below(12_000),
                    };
                    let a = LedgerStore::settle(&redis, &tenant, &limits, ids.0, actual, now);
                    let b = memory.settle(&tenant, &limits, ids.1, actual, now);
                    same(format!("{a:?}"), format!("{b:?}"), ids)
                }
                6 if !issued.is_empty() => {
                    let ids = issued[rng.below(issued.len() as u64) as usize];
                    let a = LedgerStore::release(&redis, &tenant, &limits, ids.0, now);
                    let b = memory.release(&tenant, &limits, ids.1, now);
                    same(format!("{a:?}"), format!("{b:?}"), ids)
                }
                7 => (format!("{:?}", redis.expire(now)), format!("{:?}", memory.expire(now))),
                8 => (
                    format!("{:?}", LedgerStore::load(&redis, &tenant, &limits, now)),
                    format!("{:?}", memory.load(&tenant, &limits, now)),
                ),
                _ => {
                    now += match rng.below(6) {
                        0 => 60_000,
                        1 => ttl + 1,
                        2 => 3 * 3_600_000,
                        _ => rng.below(20_000),
                    };
                    continue;
                }
            };
            assert_eq!(a, b, "seed {seed}, step {step}: redis answered {a}, memory {b}");
        }
        assert_eq!(
            format!("{:?}", redis.history(&tenant)),
            format!("{:?}", memory.history(&tenant)),
            "seed {seed}: history"
        );
    }
}

/// Two replicas' stores, eight callers each, race for one budget and one
/// RPM window: the budget is never passed, every charge is in the ledger
/// exactly once, and the minute admits exactly `rpm` calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_budget_and_one_minute() {
    let server = RedisServer::start();
    let replicas = [Arc::new(store(&server, "race")), Arc::new(store(&server, "race"))];
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits {
        budget: NanoUsd::from_cents(100),
        rpm: Some(1_000),
        ..TenantLimits::monthly(NanoUsd::from_cents(100))
    };
    let now = 1_760_000_000_000;
    let mut tasks = Vec::new();
    for caller in 0..16u64 {
        let replica = Arc::clone(&replicas[(caller % 2) as usize]);
        let tenant = tenant.clone();
        tasks.push(tokio::spawn(async move {
            let remote = replica.remote().expect("async form");
            let mut rng = Rng(caller + 1);
            let (mut charged, mut admitted, mut over_budget) = (0u64, 0u32, 0u32);
            for _ in 0..50 {
                let cost = NanoUsd(2_000_000 + rng.below(6_000_000));
                let request = ReserveRequest {
                    cost,
                    ceiling: None,
                    tokens: 10,
                    now_ms: now,
                };
                match remote.reserve(&tenant, &limits, request, 60_000).await {
                    Ok(r) => {
                        admitted += 1;
                        // Some calls come in under their hold, some over; others fail and release.
                        if rng.below(5) == 0 {
                            remote.release(&tenant, &limits, r.id, now).await.expect("release");
                        } else {
                            let actual = Actual {
                                cost: NanoUsd(cost.get() * (80 + rng.below(20)) / 100),
                                tokens: 9,
                            };
                            let settled = remote
                                .settle(&tenant, &limits, r.id, actual, now)
                                .await
                                .expect("settle");
                            charged += settled.charged.get();
                        }
                    }
                    Err(ReserveError::Budget { .. }) => over_budget += 1,
                    Err(ReserveError::Rpm { .. }) => {}
                    Err(e) => panic!("unexpected refusal: {e}"),
                }
            }
            (charged, admitted, over_budget)
        }));
    }
    let (mut charged, mut admitted, mut over_budget) = (0u64, 0u32, 0u32);
    for task in tasks {
        let (c, a, o) = task.await.unwrap();
        charged += c;
        admitted += a;
        over_budget += o;
    }
    let state = LedgerStore::load(&*replicas[1], &tenant, &limits, now).unwrap();
    assert_eq!(state.reserved, NanoUsd::ZERO);
    assert_eq!(state.spent.get(), charged, "every charge in the ledger once");
    assert!(state.spent <= limits.budget, "{:?} passed the budget", state.spent);
    assert_eq!(admitted, state.window_requests, "one window for both replicas");
    assert!(over_budget > 0, "the callers asked for more than the budget");

    // RPM = 60 for the fleet: 160 attempts in one minute, exactly 60 admitted.
    let limited = TenantId::new("limited").unwrap();
    let limits = TenantLimits {
        rpm: Some(60),
        ..TenantLimits::monthly(NanoUsd::from_usd(1_000))
    };
    let mut tasks = Vec::new();
    for caller in 0..16u64 {
        let replica = Arc::clone(&replicas[(caller % 2) as usize]);
        let tenant = limited.clone();
        tasks.push(tokio::spawn(async move {
            let remote = replica.remote().expect("async form");
            let mut admitted = 0;
            for i in 0..10 {
                let request = ReserveRequest {
                    cost: NanoUsd(1_000),
                    ceiling: None,
                    tokens: 1,
                    now_ms: now + caller * 100 + i,
                };
                match remote.reserve(&tenant, &limits, request, 60_000).await {
                    Ok(_) => admitted += 1,
                    Err(ReserveError::Rpm { .. }) => {}
                    Err(e) => panic!("unexpected refusal: {e}"),
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, 60, "rpm = 60 holds across replicas");
}

/// Redis killed with a call in flight: the settle is kept, readiness says
/// so, new holds are refused; Redis back: the charge lands once, with no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_outlives_a_redis_crash() {
    let mut server = RedisServer::start();
    let redis = store(&server, "crash");
    let remote = redis.remote().unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let now = 1_760_000_000_000;
    let request = |cost| ReserveRequest {
        cost,
        ceiling: None,
        tokens: 100,
        now_ms: now,
    };
    let first = remote
        .reserve(&tenant, &limits, request(NanoUsd::from_cents(5)), 600_000)
        .await
        .unwrap();
    let settled = remote
        .settle(
            &tenant,
            &limits,
            first.id,
            Actual {
                cost: NanoUsd::from_cents(3),
                tokens: 90,
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(settled.period_spent, NanoUsd::from_cents(3));
    let second = remote
        .reserve(&tenant, &limits, request(NanoUsd::from_cents(5)), 600_000)
        .await
        .unwrap();

    server.kill();
    let kept = remote
        .settle(
            &tenant,
            &limits,
            second.id,
            Actual {
                cost: NanoUsd::from_cents(4),
                tokens: 80,
            },
            now + 10,
        )
        .await;
    assert!(
        matches!(kept, Err(LedgerError::Deferred { charge, .. }) if charge == NanoUsd::from_cents(4)),
        "{kept:?}"
    );
    assert_eq!(redis.deferred(), 1);
    assert!(matches!(redis.health(), Err(StoreError::Unavailable { .. })));
    let refused = remote
        .reserve(&tenant, &limits, request(NanoUsd::from_cents(1)), 600_000)
        .await;
    assert!(
        matches!(refused, Err(ReserveError::Store(StoreError::Unavailable { .. }))),
        "{refused:?}"
    );

    server.restart();
    redis.drained().await;
    redis.ping().await.expect("answers again");
    assert!(redis.health().is_ok());
    let state = remote.load(&tenant, &limits, now + 20).await.unwrap();
    assert_eq!(state.spent, NanoUsd::from_cents(7), "both charges, each once");
    assert_eq!(state.reserved, NanoUsd::ZERO);
    assert_eq!(state.open_reservations, 0);
    // A settled id is never charged again.
    let again = remote
        .settle(
            &tenant,
            &limits,
            second.id,
            Actual {
                cost: NanoUsd::from_cents(4),
                tokens: 80,
            },
            now + 30,
        )
        .await;
    assert!(
        matches!(again, Err(LedgerError::UnknownReservation { .. })),
        "{again:?}"
    );
}

/// A hold that expires, and whose call then settles late, within the minute
/// it was admitted in: the window counts the call's real tokens once, as
/// the in-memory book does (its estimate is not taken off twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_settle_inside_its_minute_counts_its_tokens_once() {
    let server = RedisServer::start();
    let redis = store(&server, "late");
    let memory = MemoryStore::new();
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits {
        tpm: Some(100_000),
        ..TenantLimits::monthly(NanoUsd::from_usd(10))
    };
    let minute_start = 29_333_334 * 60_000;
    let request = ReserveRequest {
        cost: NanoUsd::from_cents(1),
        ceiling: None,
        tokens: 1_000,
        now_ms: minute_start + 1_000,
    };
    let a = LedgerStore::reserve(&redis, &tenant, &limits, request, 10_000).unwrap();
    let b = memory.reserve(&tenant, &limits, request, 10_000).unwrap();
    assert_eq!(LedgerStore::expire(&redis, minute_start + 20_000).unwrap(), 1);
    assert_eq!(memory.expire(minute_start + 20_000).unwrap(), 1);
    let actual = Actual {
        cost: NanoUsd::from_cents(1),
        tokens: 300,
    };
    let late_a = LedgerStore::settle(&redis, &tenant, &limits, a.id, actual, minute_start + 30_000).unwrap();
    let late_b = memory
        .settle(&tenant, &limits, b.id, actual, minute_start + 30_000)
        .unwrap();
    assert!(late_a.late && late_b.late);
    let state_a = LedgerStore::load(&redis, &tenant, &limits, minute_start + 40_000).unwrap();
    let state_b = memory.load(&tenant, &limits, minute_start + 40_000).unwrap();
    assert_eq!(state_b.window_tokens, 300);
    assert_eq!(state_a, state_b);
}

/// Another tenant's reservation id settles nothing: each tenant's ids start
/// at a random point of their own, and the hold it names stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_id_settles_nothing() {
    let server = RedisServer::start();
    let redis = store(&server, "ids");
    let remote = redis.remote().unwrap();
    let (acme, globex) = (TenantId::new("acme").unwrap(), TenantId::new("globex").unwrap());
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let now = 1_760_000_000_000;
    let request = ReserveRequest {
        cost: NanoUsd::from_cents(2),
        ceiling: None,
        tokens: 10,
        now_ms: now,
    };
    let a = remote.reserve(&acme, &limits, request, 600_000).await.unwrap();
    let g = remote.reserve(&globex, &limits, request, 600_000).await.unwrap();
    assert_ne!(a.id, g.id);
    let actual = Actual {
        cost: NanoUsd::from_cents(1),
        tokens: 5,
    };
    let wrong = remote.settle(&globex, &limits, a.id, actual, now).await;
    assert!(
        matches!(wrong, Err(LedgerError::UnknownReservation { .. })),
        "{wrong:?}"
    );
    let wrong = remote.release(&globex, &limits, a.id, now).await;
    assert!(
        matches!(wrong, Err(LedgerError::UnknownReservation { .. })),
        "{wrong:?}"
    );
    let state = remote.load(&globex, &limits, now).await.unwrap();
    assert_eq!((state.spent, state.reserved), (NanoUsd::ZERO, NanoUsd::from_cents(2)));
    remote
        .settle(&acme, &limits, a.id, actual, now)
        .await
        .expect("its own tenant settles it");
    remote
        .settle(&globex, &limits, g.id, actual, now)
        .await
        .expect("and globex its own");
}

/// Redis answers, but refuses writes: a primary demoted to a read-only
/// replica, as in a failover. A settle it refuses is kept, not dropped; the
/// health check sees the replica and readiness says why; once Redis takes
/// writes again the charge is written, and the tenant is charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_outlives_a_redis_that_refuses_writes() {
    let server = RedisServer::start();
    let redis = store(&server, "readonly");
    let remote = redis.remote().unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let now = 1_760_000_000_000;
    let held = remote
        .reserve(
            &tenant,
            &limits,
            ReserveRequest {
                cost: NanoUsd::from_cents(5),
                ceiling: None,
                tokens: 100,
                now_ms: now,
            },
            600_000,
        )
        .await
        .unwrap();

    // A replica of a primary that is not there: it answers, and refuses every write.
    assert_eq!(server.cli(&["REPLICAOF", "127.0.0.1", "1"]).trim(), "OK");
    let actual = Actual {
        cost: NanoUsd::from_cents(3),
        tokens: 90,
    };
    // Refused by the script's first write, or at once once the health check saw it.
    let kept = remote.settle(&tenant, &limits, held.id, actual, now + 10).await;
    assert!(
        matches!(&kept, Err(LedgerError::Deferred { charge, detail, .. })
            if *charge == NanoUsd::from_cents(3)
                && (detail.contains("read only replica") || detail.contains("read-only replica"))),
        "{kept:?}"
    );
    assert_eq!(redis.deferred(), 1);
    let refused = redis.ping().await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable { detail, .. }) if detail.contains("read-only replica")),
        "{refused:?}"
    );
    let health = redis.health();
    assert!(
        matches!(&health, Err(StoreError::Unavailable { detail, .. }) if detail.contains("read-only replica")),
        "readiness says why: {health:?}"
    );

    assert_eq!(server.cli(&["REPLICAOF", "NO", "ONE"]).trim(), "OK");
    redis.drained().await;
    redis.ping().await.expect("a primary again");
    assert!(redis.health().is_ok());
    let state = remote.load(&tenant, &limits, now + 20).await.unwrap();
    assert_eq!(state.spent, NanoUsd::from_cents(3), "charged once");
    assert_eq!(state.reserved, NanoUsd::ZERO);
    assert_eq!(state.open_reservations, 0);
}

/// How the health check's `PING` fares while Redis refuses the settle.
enum Ping {
    Answers,
    /// Refused: Redis counts as away, and readiness says it refuses commands.
    Refused,
    /// Hung up on: away, as in an outage.
    HungUp,
}

/// A settle Redis refuses, without running it, once `refuse` has run: kept,
/// with one of `said`'s `|`-separated words in its reason, and no new hold
/// taken; written once, and only once, after `undo`. Readiness follows
/// `ping`.
async fn a_refused_settle_is_kept_and_written_once(
    prefix: &str,
    refuse: impl FnOnce(&RedisServer),
    undo: impl FnOnce(&RedisServer),
    said: &str,
    ping: Ping,
) {
    let says = |detail: &str| said.split('|').any(|word| detail.contains(word));
    let server = RedisServer::start();
    let redis = store(&server, prefix);
    let remote = redis.remote().unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let now = 1_760_000_000_000;
    let request = |now_ms| ReserveRequest {
        cost: NanoUsd::from_cents(5),
        ceiling: None,
        tokens: 100,
        now_ms,
    };
    let held = remote.reserve(&tenant, &limits, request(now), 600_000).await.unwrap();

    refuse(&server);
    // Two minutes on, the settle begins with a write that can grow memory
    // (its rate window's new minute), which an `OOM` refuses first.
    let later = now + 120_000;
    let actual = Actual {
        cost: NanoUsd::from_cents(3),
        tokens: 90,
    };
    let kept = remote.settle(&tenant, &limits, held.id, actual, later).await;
    assert!(
        matches!(&kept, Err(LedgerError::Deferred { charge, detail, .. })
            if *charge == NanoUsd::from_cents(3) && says(detail)),
        "{kept:?}"
    );
    assert_eq!(redis.deferred(), 1);
    let (checked, health) = (redis.ping().await, redis.health());
    let unready = match ping {
        Ping::Answers => {
            checked.expect("it answers the health check");
            "1 charge it was away for, or refused"
        }
        Ping::Refused => {
            assert!(
                matches!(&checked, Err(StoreError::Unavailable { detail, .. })
                    if detail.contains("refuses this gateway's commands") && says(detail)),
                "{checked:?}"
            );
            "refuses this gateway's commands"
        }
        // Readiness gives the reason the health check met.
        Ping::HungUp => match &checked {
            Err(StoreError::Unavailable { detail, .. }) if says(detail) => detail,
            _ => panic!("{checked:?}"),
        },
    };
    assert!(
        matches!(&health, Err(StoreError::Unavailable { detail, .. }) if detail.contains(unready)),
        "unready until the charge is written, and says why: {health:?}"
    );
    // No new hold while Redis cannot write one, and a clear reason.
    let refused = remote.reserve(&tenant, &limits, request(later), 600_000).await;
    assert!(
        matches!(&refused, Err(ReserveError::Store(StoreError::Unavailable { detail, .. })) if says(detail)),
        "{refused:?}"
    );

    undo(&server);
    redis.drained().await;
    redis.ping().await.expect("writable again");
    assert!(redis.health().is_ok());
    let state = remote.load(&tenant, &limits, later + 10).await.unwrap();
    assert_eq!(state.spent, NanoUsd::from_cents(3), "charged once");
    assert_eq!(state.reserved, NanoUsd::ZERO);
    assert_eq!(state.open_reservations, 0);
}

fn config_set(server: &RedisServer, name: &str, value: &str) {
    assert_eq!(server.cli(&["CONFIG", "SET", name, value]), "OK", "{name} {value}");
}

/// Over `maxmemory` with no eviction, Redis refuses a script's first write
/// that could grow memory, before the script has changed anything.
#[tokio::test]
async fn a_charge_outlives_a_redis_out_of_memory() {
    a_refused_settle_is_kept_and_written_once(
        "oom",
        |server| {
            config_set(server, "maxmemory-policy", "noeviction");
            config_set(server, "maxmemory", "1");
        },
        |server| config_set(server, "maxmemory", "0"),
        "maxmemory",
        Ping::Answers,
    )
    .await;
}

/// A primary told to write only with a replica in sync, and without one,
/// refuses every write.
#[tokio::test]
async fn a_charge_outlives_a_redis_without_its_replicas() {
    a_refused_settle_is_kept_and_written_once(
        "noreplicas",
        |server| config_set(server, "min-replicas-to-write", "1"),
        |server| config_set(server, "min-replicas-to-write", "0"),
        "NOREPLICAS",
        Ping::Answers,
    )
    .await;
}

/// With saves configured, a failed background save (its directory gone, as
/// on a lost or full disk) makes Redis refuse every write, and the `PING`
/// too, with `MISCONF`, until a save succeeds.
#[tokio::test]
async fn a_charge_outlives_a_redis_that_cannot_save() {
    a_refused_settle_is_kept_and_written_once(
        "misconf",
        |server| {
            let gone = tempfile::tempdir().unwrap();
            config_set(server, "save", "3600 1");
            config_set(server, "dir", gone.path().to_str().unwrap());
            drop(gone);
            assert!(server.cli(&["BGSAVE"]).contains("Background saving started"));
            assert!(server.logged("Background saving error", Duration::from_secs(30)));
        },
        |server| {
            config_set(server, "dir", server.dir().to_str().unwrap());
            assert!(server.cli(&["BGSAVE"]).contains("Background saving started"));
            assert!(server.logged("Background saving terminated with success", Duration::from_secs(30)));
        },
        "MISCONF",
        Ping::Refused,
    )
    .await;
}

/// An ACL user made read-only on the ledger's keys: Redis checks the keys a
/// script declares before it runs it, and refuses it whole.
#[tokio::test]
async fn a_charge_outlives_an_acl_that_denies_the_ledger() {
    a_refused_settle_is_kept_and_written_once(
        "noperm",
        |server| assert_eq!(server.cli(&["ACL", "SETUSER", "default", "resetkeys", "%R~*"]), "OK"),
        |server| assert_eq!(server.cli(&["ACL", "SETUSER", "default", "allkeys"]), "OK"),
        "no permissions",
        Ping::Answers,
    )
    .await;
}

/// Redis given a password the gateway lacks, its connections then dropped
/// (as by a restart): every command is refused until the password is
/// mended, the `PING` with `NOAUTH`, a script as a protocol error before it
/// is read.
#[tokio::test]
async fn a_charge_outlives_a_redis_that_asks_for_a_password() {
    a_refused_settle_is_kept_and_written_once(
        "noauth",
        |server| {
            config_set(server, "requirepass", "rotated");
            assert_ne!(
                server.cli(&["-a", "rotated", "--no-auth-warning", "CLIENT", "KILL", "TYPE", "normal"]),
                "0"
            );
        },
        |server| {
            let cleared = server.cli(&["-a", "rotated", "--no-auth-warning", "CONFIG", "SET", "requirepass", ""]);
            assert_eq!(cleared, "OK");
        },
        // The settle's last try may meet the connection Redis hung up on.
        "NOAUTH|unauthenticated|broken pipe|reset by peer",
        Ping::Refused,
    )
    .await;
}

/// Redis at its `maxclients`, the gateway's connections dropped: each new
/// one is told "max number of clients reached" and hung up on. The test's
/// own connection holds the last slot, and lifts the cap again.
#[tokio::test]
async fn a_charge_outlives_a_redis_full_of_clients() {
    let holder: Arc<std::sync::Mutex<Option<RawClient>>> = Arc::default();
    let (held, freed) = (holder.clone(), holder);
    a_refused_settle_is_kept_and_written_once(
        "maxclients",
        move |server| {
            let mut slot = RawClient::connect(server);
            assert_eq!(slot.ask("CONFIG SET maxclients 1"), "+OK");
            assert_ne!(slot.ask("CLIENT KILL TYPE normal SKIPME yes"), ":0");
            *held.lock().unwrap() = Some(slot);
        },
        move |_| {
            let mut slot = freed.lock().unwrap().take().unwrap();
            assert_eq!(slot.ask("CONFIG SET maxclients 10000"), "+OK");
        },
        // Redis hangs up as it answers, so the refusal is seldom read.
        "max number of clients|reset by peer|broken pipe",
        Ping::HungUp,
    )
    .await;
}

/// One connection to Redis, for commands whose answer is one line.
struct RawClient(std::io::BufReader<std::net::TcpStream>);

impl RawClient {
    fn connect(server: &RedisServer) -> Self {
        Self(std::io::BufReader::new(
            std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap(),
        ))
    }

    fn ask(&mut self, command: &str) -> String {
        use std::io::{BufRead, Write};
        self.0.get_mut().write_all(format!("{command}\r\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }
}

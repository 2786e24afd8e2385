//! A replica cut off from Redis for longer than its lease while its call
//! runs: another replica adopts the call's hold and charges it in full, as
//! it must (the call may have run, and its owner may be gone for good). The
//! owner was alive: once its settle gets through, the usage it knows
//! replaces the adopter's charge, once, in the period's spend, tokens and
//! burn series alike.

use std::time::Duration;

use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, LedgerError, LedgerStore, RedisSettings, RedisStore, Reservation, ReserveRequest, RestoredHold, SeriesKeep,
    TenantLimits,
};
use tollgate_host::money::NanoUsd;

use crate::support::redis::RedisServer;
use crate::support::watch::until_notified;

fn replica(url: String) -> RedisStore {
    replica_with(url, None)
}

fn replica_with(url: String, journal: Option<std::path::PathBuf>) -> RedisStore {
    RedisStore::connect(RedisSettings {
        url,
        key_prefix: "amend".into(),
        timeout: Duration::from_millis(500),
        retry_for: Duration::from_millis(300),
        lease: Duration::from_millis(600),
        allowance: None,
        journal,
    })
    .expect("connect")
}

/// A hold of 5 cents and 100 tokens.
fn five_cents(now_ms: u64) -> ReserveRequest {
    ReserveRequest {
        cost: NanoUsd::from_cents(5),
        ceiling: None,
        tokens: 100,
        now_ms,
    }
}

/// `server`'s URL, logged in as `user` (password "secret").
fn as_user(server: &RedisServer, user: &str) -> String {
    server.url().replacen("redis://", &format!("redis://{user}:secret@"), 1)
}

/// The wall clock in milliseconds, as the leases and burn series read it.
pub(crate) fn wall_now() -> u64 {
    u64::try_from(
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .expect("after 1970")
            .as_millis(),
    )
    .expect("in range")
}

fn acl(server: &RedisServer, rules: &[&str]) {
    let mut args = vec!["ACL", "SETUSER", "owner"];
    args.extend_from_slice(rules);
    assert_eq!(server.cli(&args), "OK", "{rules:?}");
}

/// The holds `store` adopts, once it has adopted some (woken by its signal).
async fn adopted(store: &RedisStore) -> Vec<RestoredHold> {
    let signal = store.restored_signal().expect("the Redis store adopts");
    until_notified(
        signal,
        Duration::from_secs(30),
        "the hold is adopted once the owner's lease lapses",
        || Some(store.take_restored()).filter(|holds| !holds.is_empty()),
    )
    .await
}

/// An owner and an adopter on one Redis, the owner holding five cents of
/// acme's budget for `ttl_ms`, then cut off: Redis refuses its every
/// command, its lease lapses, and the adopter takes its hold.
struct CutOff {
    server: RedisServer,
    owner: RedisStore,
    adopter: RedisStore,
    tenant: TenantId,
    limits: TenantLimits,
    request: ReserveRequest,
    held: Reservation,
    /// The adopted hold, as the adopter charges it.
    hold: Actual,
}

async fn cut_off_with_a_hold(ttl_ms: u64) -> CutOff {
    let server = RedisServer::start();
    acl(&server, &["on", ">secret", "~*", "&*", "+@all"]);
    let owner = replica(as_user(&server, "owner"));
    let adopter = replica(server.url());
    let tenant = TenantId::new("acme").unwrap();
    adopter.track(&tenant);
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let request = five_cents(wall_now());
    let held = owner
        .remote()
        .unwrap()
        .reserve(&tenant, &limits, request, ttl_ms)
        .await
        .unwrap();
    acl(&server, &["-@all"]);
    let holds = adopted(&adopter).await;
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert_eq!(
        (holds[0].id, holds[0].cost, holds[0].tokens),
        (held.id, request.cost, 100)
    );
    let hold = Actual {
        cost: holds[0].cost,
        tokens: holds[0].tokens,
    };
    CutOff {
        server,
        owner,
        adopter,
        tenant,
        limits,
        request,
        held,
        hold,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_off_past_its_lease_amends_the_adopters_charge_with_its_usage() {
    // The adopter charges the owner's hold in full, as a restored hold is.
    let CutOff {
        server,
        owner,
        adopter,
        tenant,
        limits,
        request,
        held,
        hold,
    } = cut_off_with_a_hold(600_000).await;
    let now = wall_now();
    let remote = adopter.remote().unwrap();
    let charged = remote.settle(&tenant, &limits, held.id, hold, now + 1).await.unwrap();
    assert_eq!(charged.charged, request.cost);
    assert_eq!(
        remote.load(&tenant, &limits, now + 2).await.unwrap().spent,
        request.cost
    );

    // The owner's call ends meanwhile: its settle is kept, then written once
    // Redis lets the owner in again, and it amends the adopter's charge.
    let usage = Actual {
        cost: NanoUsd::from_cents(3),
        tokens: 90,
    };
    let kept = owner
        .remote()
        .unwrap()
        .settle(&tenant, &limits, held.id, usage, now + 3)
        .await;
    assert!(matches!(kept, Err(LedgerError::Deferred { .. })), "{kept:?}");
    acl(&server, &["+@all"]);
    owner.drained().await;

    let state = remote.load(&tenant, &limits, now + 4).await.unwrap();
    assert_eq!(state.spent, usage.cost, "charged its usage, not its hold");
    assert_eq!(state.used_tokens, 90);
    assert_eq!((state.reserved, state.open_reservations), (NanoUsd::ZERO, 0));
    let history = adopter.history(&tenant).unwrap();
    assert_eq!(history.last().map(|p| p.calls), Some(1), "{history:?}");
    let keep = SeriesKeep { minutes: 60, hours: 48 };
    let series = remote
        .spend_series(&tenant, now + 5, keep)
        .await
        .unwrap()
        .expect("kept");
    for buckets in [&series.minutes, &series.hours] {
        let burned: u64 = buckets.iter().map(|(_, spent)| spent).sum();
        assert_eq!(burned, usage.cost.get(), "{series:?}");
    }

    // Once: the adopter's retry and the owner's second word change nothing.
    let again = remote.settle(&tenant, &limits, held.id, hold, now + 6).await;
    assert!(
        matches!(again, Err(LedgerError::UnknownReservation { .. })),
        "{again:?}"
    );
    let again = owner
        .remote()
        .unwrap()
        .settle(&tenant, &limits, held.id, usage, now + 7)
        .await;
    assert!(
        matches!(again, Err(LedgerError::UnknownReservation { .. })),
        "{again:?}"
    );
    assert_eq!(remote.load(&tenant, &limits, now + 8).await.unwrap().spent, usage.cost);
}

/// A replica restarts with two outcomes its earlier process kept, and Redis
/// refuses it the keys of the tenant kept first (bbb). Its first flush stops
/// at that refusal, and its adoption pass, which takes aaa first, adopts
/// aaa's hold (its earlier process's lease has lapsed) and charges it in
/// full before aaa's outcome is written. Written under the earlier process's id, the outcome still
/// amends the charge: each call is charged its usage, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_that_adopts_its_own_earlier_hold_is_amended_by_its_journal() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let journal = |name: &str| dir.path().join(name);
    for user in ["earlier", "later"] {
        assert_eq!(
            server.cli(&["ACL", "SETUSER", user, "on", ">secret", "~*", "&*", "+@all"]),
            "OK"
        );
    }
    let earlier = replica_with(as_user(&server, "earlier"), Some(journal("earlier.jsonl")));
    let (aaa, bbb) = (TenantId::new("aaa").unwrap(), TenantId::new("bbb").unwrap());
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let now = wall_now();
    let request = five_cents(now);
    let remote = earlier.remote().unwrap();
    let held_a = remote.reserve(&aaa, &limits, request, 600_000).await.unwrap();
    let held_b = remote.reserve(&bbb, &limits, request, 600_000).await.unwrap();

    // Cut off, the earlier process keeps both settles in its journal, and is killed.
    assert_eq!(server.cli(&["ACL", "SETUSER", "earlier", "-@all"]), "OK");
    let usage = |cents| Actual {
        cost: NanoUsd::from_cents(cents),
        tokens: 90,
    };
    for (tenant, held, cents) in [(&bbb, &held_b, 2), (&aaa, &held_a, 3)] {
        let kept = remote.settle(tenant, &limits, held.id, usage(cents), now + 1).await;
        assert!(matches!(kept, Err(LedgerError::Deferred { .. })), "{kept:?}");
    }
    drop(earlier);
    std::fs::copy(journal("earlier.jsonl"), journal("later.jsonl")).expect("the journal outlives it");

    // The next process may not touch bbb's keys for now.
    let only_aaa = ["resetkeys", "~amend:{aaa}:*", "~amend:replica:*"];
    assert_eq!(
        server.cli(&[&["ACL", "SETUSER", "later"][..], &only_aaa].concat()),
        "OK"
    );
    let later = replica_with(as_user(&server, "later"), Some(journal("later.jsonl")));
    later.track(&aaa);
    later.track(&bbb);
    let holds = adopted(&later).await;
    assert_eq!(
        holds.iter().map(|h| (&h.tenant, h.id)).collect::<Vec<_>>(),
        vec![(&aaa, held_a.id)],
        "bbb's keys are refused; aaa's hold is adopted"
    );
    let remote = later.remote().unwrap();
    let hold = Actual {
        cost: holds[0].cost,
        tokens: holds[0].tokens,
    };
    let charged = remote.settle(&aaa, &limits, held_a.id, hold, now + 2).await.unwrap();
    assert_eq!(charged.charged, request.cost, "charged its hold, as adopted");

    assert_eq!(server.cli(&["ACL", "SETUSER", "later", "allkeys"]), "OK");
    later.drained().await;
    for (tenant, cents) in [(&aaa, 3), (&bbb, 2)] {
        let state = remote.load(tenant, &limits, now + 3).await.unwrap();
        assert_eq!(state.spent, usage(cents).cost, "{tenant}: its usage, once");
        assert_eq!(
            (state.reserved, state.open_reservations),
            (NanoUsd::ZERO, 0),
            "{tenant}"
        );
    }
}

/// The owner's call outlives its hold's TTL while the owner is cut off: the
/// hold expires (its money back in the budget), is adopted while expired,
/// and the adopter charges it late, in full. The owner's kept usage then
/// replaces that late charge, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_then_adopted_holds_late_charge_is_amended_by_its_owners_usage() {
    let usage = Actual {
        cost: NanoUsd::from_cents(3),
        tokens: 90,
    };
    an_expired_then_adopted_hold_meets_its_owners_outcome(Some(usage)).await;
}

/// As above, for a call that never ran: the late charge is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_then_adopted_holds_late_charge_is_undone_by_its_owners_release() {
    an_expired_then_adopted_hold_meets_its_owners_outcome(None).await;
}

async fn an_expired_then_adopted_hold_meets_its_owners_outcome(outcome: Option<Actual>) {
    // A TTL of 1 ms: the hold has expired by the time anything looks at it.
    let CutOff {
        server,
        owner,
        adopter,
        tenant,
        limits,
        request,
        held,
        hold,
    } = cut_off_with_a_hold(1).await;
    let remote = adopter.remote().unwrap();
    let state = remote.load(&tenant, &limits, wall_now()).await.unwrap();
    assert_eq!(
        (state.reserved, state.open_reservations),
        (NanoUsd::ZERO, 0),
        "expired: its hold is back in the budget"
    );
    assert_eq!(server.cli(&["HLEN", "amend:{acme}:expired"]), "1");
    let charged = remote
        .settle(&tenant, &limits, held.id, hold, wall_now())
        .await
        .unwrap();
    assert_eq!((charged.charged, charged.late), (request.cost, true), "{charged:?}");

    let owners = owner.remote().unwrap();
    let kept = match outcome {
        Some(usage) => owners.settle(&tenant, &limits, held.id, usage, wall_now()).await.err(),
        None => owners.release(&tenant, &limits, held.id, wall_now()).await.err(),
    };
    assert!(
        matches!(
            kept,
            Some(LedgerError::Deferred { .. } | LedgerError::ReleaseDeferred { .. })
        ),
        "{kept:?}"
    );
    acl(&server, &["+@all"]);
    owner.drained().await;

    let expected = outcome.unwrap_or(Actual {
        cost: NanoUsd::ZERO,
        tokens: 0,
    });
    let state = remote.load(&tenant, &limits, wall_now()).await.unwrap();
    assert_eq!(
        (state.spent, state.used_tokens),
        (expected.cost, expected.tokens),
        "the owner's outcome, not the late charge"
    );
    assert_eq!((state.reserved, state.open_reservations), (NanoUsd::ZERO, 0));
    assert_eq!(server.cli(&["HLEN", "amend:{acme}:expired"]), "0");
    let keep = SeriesKeep { minutes: 60, hours: 48 };
    let series = remote
        .spend_series(&tenant, wall_now(), keep)
        .await
        .unwrap()
        .expect("kept");
    for buckets in [&series.minutes, &series.hours] {
        let burned: u64 = buckets.iter().map(|(_, spent)| spent).sum();
        assert_eq!(burned, expected.cost.get(), "{series:?}");
    }
}

/// While the owner is cut off, the tenant's traffic goes on through the
/// other replica: more closed holds than Redis keeps for retries. The
/// adopter's charge is kept apart from them, and the owner's usage still
/// replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopters_charge_outlasts_the_tenants_next_calls_until_its_owner_amends_it() {
    let CutOff {
        server,
        owner,
        adopter,
        tenant,
        limits,
        held,
        hold,
        ..
    } = cut_off_with_a_hold(600_000).await;
    let remote = adopter.remote().unwrap();
    remote
        .settle(&tenant, &limits, held.id, hold, wall_now())
        .await
        .unwrap();

    // More calls than the 2,048 closed holds Redis remembers for retries.
    let calls = 2_100u64;
    let one = Actual {
        cost: NanoUsd(1),
        tokens: 1,
    };
    for _ in 0..calls {
        let small = ReserveRequest {
            cost: one.cost,
            ceiling: None,
            tokens: 1,
            now_ms: wall_now(),
        };
        let other = remote.reserve(&tenant, &limits, small, 600_000).await.unwrap();
        remote
            .settle(&tenant, &limits, other.id, one, wall_now())
            .await
            .unwrap();
    }

    let usage = Actual {
        cost: NanoUsd::from_cents(3),
        tokens: 90,
    };
    let kept = owner
        .remote()
        .unwrap()
        .settle(&tenant, &limits, held.id, usage, wall_now())
        .await;
    assert!(matches!(kept, Err(LedgerError::Deferred { .. })), "{kept:?}");
    acl(&server, &["+@all"]);
    owner.drained().await;
    let state = remote.load(&tenant, &limits, wall_now()).await.unwrap();
    assert_eq!(
        (state.spent.get(), state.used_tokens),
        (usage.cost.get() + calls, usage.tokens + calls),
        "the owner's usage replaced the hold's charge"
    );
}

//! A replica cut off from Redis for longer than its lease while its call
//! runs: another replica adopts the call's hold and charges it in full, as
//! it must (the call may have run, and its owner may be gone for good). The
//! owner was alive: once its settle gets through, the usage it knows
//! replaces the adopter's charge, once, in the period's spend, tokens and
//! burn series alike.

use std::time::Duration;

use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, LedgerError, LedgerStore, RedisSettings, RedisStore, ReserveRequest, RestoredHold, SeriesKeep, TenantLimits,
};
use tollgate_host::money::NanoUsd;

use crate::support::redis::RedisServer;

fn replica(url: String) -> RedisStore {
    RedisStore::connect(RedisSettings {
        url,
        key_prefix: "amend".into(),
        timeout: Duration::from_millis(500),
        retry_for: Duration::from_millis(300),
        lease: Duration::from_millis(600),
        allowance: None,
        journal: None,
    })
    .expect("connect")
}

fn acl(server: &RedisServer, rules: &[&str]) {
    let mut args = vec!["ACL", "SETUSER", "owner"];
    args.extend_from_slice(rules);
    assert_eq!(server.cli(&args), "OK", "{rules:?}");
}

/// The holds `store` adopts, once it has adopted some (woken by its signal).
async fn adopted(store: &RedisStore) -> Vec<RestoredHold> {
    let signal = store.restored_signal().expect("the Redis store adopts");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let holds = store.take_restored();
            if !holds.is_empty() {
                return holds;
            }
            woken.await;
        }
    })
    .await
    .expect("the hold is adopted once the owner's lease lapses")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_off_past_its_lease_amends_the_adopters_charge_with_its_usage() {
    let server = RedisServer::start();
    acl(&server, &["on", ">secret", "~*", "&*", "+@all"]);
    let owner = replica(server.url().replacen("redis://", "redis://owner:secret@", 1));
    let adopter = replica(server.url());
    let tenant = TenantId::new("acme").unwrap();
    adopter.track(&tenant);
    let limits = TenantLimits::monthly(NanoUsd::from_usd(10));
    let now = u64::try_from(
        std::time::SystemTime::UNIX_EPOCH
            .elapsed()
            .expect("after 1970")
            .as_millis(),
    )
    .expect("in range");
    let request = ReserveRequest {
        cost: NanoUsd::from_cents(5),
        ceiling: None,
        tokens: 100,
        now_ms: now,
    };
    let held = owner
        .remote()
        .unwrap()
        .reserve(&tenant, &limits, request, 600_000)
        .await
        .unwrap();

    // Redis refuses the owner's every command: its lease lapses, and the
    // adopter takes its hold and charges it in full, as a restored hold is.
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

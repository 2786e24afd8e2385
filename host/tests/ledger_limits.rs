//! Admission limits: budget, TPM and RPM windows, and the exact figures each
//! refusal reports.

use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, Ledger, LedgerError, LedgerSettings, MemoryStore, ReserveError, ReserveRequest, TenantLimits,
};
use tollgate_host::money::NanoUsd;

/// 2025-06-15T12:00:00Z, on a minute boundary.
const T0: u64 = 1_749_988_800_000;
const MINUTE: u64 = 60_000;

fn ledger(limits: TenantLimits) -> (Ledger<MemoryStore>, TenantId) {
    let ledger = Ledger::new(
        MemoryStore::new(),
        LedgerSettings {
            reservation_ttl_ms: 5 * MINUTE,
        },
    );
    let tenant = TenantId::new("acme").unwrap();
    ledger.set_limits(&tenant, limits);
    (ledger, tenant)
}

fn req(cost: u64, tokens: u64, now_ms: u64) -> ReserveRequest {
    ReserveRequest {
        cost: NanoUsd(cost),
        ceiling: None,
        tokens,
        now_ms,
    }
}

#[test]
fn budget_refusal_names_every_figure() {
    let (ledger, t) = ledger(TenantLimits::monthly(NanoUsd::from_usd(1)));
    let a = ledger.reserve(&t, req(600_000_000, 10, T0)).unwrap();
    ledger
        .settle(
            &t,
            a.id,
            Actual {
                cost: NanoUsd(250_000_000),
                tokens: 10,
            },
            T0 + 1,
        )
        .unwrap();
    ledger.reserve(&t, req(500_000_000, 10, T0 + 2)).unwrap();
    // $0.25 spent + $0.50 held: exactly $0.25 left.
    ledger.reserve(&t, req(250_000_000, 10, T0 + 3)).unwrap();
    let err = ledger.reserve(&t, req(1, 10, T0 + 4)).unwrap_err();
    let ReserveError::Budget {
        limit,
        spent,
        reserved,
        requested,
        period_end_ms,
    } = err.clone()
    else {
        panic!("expected a budget error, got {err:?}");
    };
    assert_eq!(
        (limit, spent, reserved, requested),
        (
            NanoUsd::from_usd(1),
            NanoUsd(250_000_000),
            NanoUsd(750_000_000),
            NanoUsd(1)
        )
    );
    assert_eq!(period_end_ms, 1_751_328_000_000, "2025-07-01T00:00:00Z");
    let msg = err.to_string();
    for figure in [
        "$1.00",
        "$0.25 spent",
        "$0.75 held",
        "up to $0.000000001",
        "($0.00 available)",
        "1751328000000",
    ] {
        assert!(msg.contains(figure), "{figure:?} missing from: {msg}");
    }
}

#[test]
fn unknown_tenant_is_refused_with_advice() {
    let (ledger, _) = ledger(TenantLimits::monthly(NanoUsd::from_usd(1)));
    let stranger = TenantId::new("stranger").unwrap();
    let err = ledger.reserve(&stranger, req(1, 1, T0)).unwrap_err();
    assert_eq!(
        err,
        ReserveError::UnknownTenant {
            tenant: stranger.clone()
        }
    );
    assert!(err.to_string().contains("set_limits"), "{err}");
    assert!(matches!(
        ledger.snapshot(&stranger, T0),
        Err(LedgerError::UnknownTenant { .. })
    ));
}

#[test]
fn rpm_counts_requests_per_calendar_minute() {
    let limits = TenantLimits {
        rpm: Some(3),
        ..TenantLimits::monthly(NanoUsd::from_usd(100))
    };
    let (ledger, t) = ledger(limits);
    let first = ledger.reserve(&t, req(1, 1, T0 + 10_000)).unwrap();
    ledger.reserve(&t, req(1, 1, T0 + 20_000)).unwrap();
    // A released call still counts: retries must not get around the limit.
    ledger.release(&t, first.id, T0 + 21_000).unwrap();
    ledger.reserve(&t, req(1, 1, T0 + 30_000)).unwrap();
    let err = ledger.reserve(&t, req(1, 1, T0 + 45_000)).unwrap_err();
    assert_eq!(
        err,
        ReserveError::Rpm {
            limit: 3,
            used: 3,
            retry_after_ms: 15_000
        }
    );
    assert_eq!(
        err.to_string(),
        "requests-per-minute limit exceeded: 3 of 3 requests already made this minute; retry in 15000 ms"
    );
    let state = ledger.snapshot(&t, T0 + 59_999).unwrap();
    assert_eq!((state.window_requests, state.rpm), (3, Some(3)));
    // The next minute starts empty.
    ledger.reserve(&t, req(1, 1, T0 + MINUTE)).unwrap();
    assert_eq!(ledger.snapshot(&t, T0 + MINUTE).unwrap().window_requests, 1);
}

#[test]
fn tpm_counts_estimates_then_real_tokens() {
    let limits = TenantLimits {
        tpm: Some(1_000),
        ..TenantLimits::monthly(NanoUsd::from_usd(100))
    };
    let (ledger, t) = ledger(limits);
    let a = ledger.reserve(&t, req(1, 600, T0)).unwrap();
    let err = ledger.reserve(&t, req(1, 500, T0 + 1_000)).unwrap_err();
    assert_eq!(
        err,
        ReserveError::Tpm {
            limit: 1_000,
            used: 600,
            requested: 500,
            retry_after_ms: 59_000
        }
    );
    assert_eq!(
        err.to_string(),
        "tokens-per-minute limit exceeded: this call needs up to 500 tokens but the limit is 1000 and 600 are \
         already counted this minute; retry in 59000 ms"
    );
    // Settling replaces the estimate by the real count: 300 used, 700 free.
    ledger
        .settle(
            &t,
            a.id,
            Actual {
                cost: NanoUsd(1),
                tokens: 300,
            },
            T0 + 2_000,
        )
        .unwrap();
    let b = ledger.reserve(&t, req(1, 700, T0 + 3_000)).unwrap();
    assert_eq!(ledger.snapshot(&t, T0 + 3_000).unwrap().window_tokens, 1_000);
    // Releasing gives the estimate back.
    ledger.release(&t, b.id, T0 + 4_000).unwrap();
    assert_eq!(ledger.snapshot(&t, T0 + 4_000).unwrap().window_tokens, 300);
    // A call larger than the whole limit can never pass: the message says so.
    let err = ledger.reserve(&t, req(1, 5_000, T0 + 5_000)).unwrap_err();
    assert!(err.to_string().contains("no single call may exceed the limit"), "{err}");
    // A new minute starts from zero.
    ledger.reserve(&t, req(1, 1_000, T0 + MINUTE)).unwrap();
}

#[test]
fn budget_is_checked_before_rates() {
    let limits = TenantLimits {
        rpm: Some(1),
        tpm: Some(10),
        ..TenantLimits::monthly(NanoUsd(100))
    };
    let (ledger, t) = ledger(limits);
    ledger.reserve(&t, req(60, 10, T0)).unwrap();
    assert!(matches!(
        ledger.reserve(&t, req(60, 10, T0)),
        Err(ReserveError::Budget { .. })
    ));
    assert!(matches!(
        ledger.reserve(&t, req(10, 10, T0)),
        Err(ReserveError::Tpm { .. })
    ));
    assert!(matches!(
        ledger.reserve(&t, req(10, 0, T0)),
        Err(ReserveError::Rpm { .. })
    ));
}

#[test]
fn settle_and_release_are_idempotent_by_id() {
    let (ledger, t) = ledger(TenantLimits::monthly(NanoUsd::from_usd(1)));
    let a = ledger.reserve(&t, req(100, 1, T0)).unwrap();
    let charge = Actual {
        cost: NanoUsd(80),
        tokens: 1,
    };
    ledger.settle(&t, a.id, charge, T0 + 1).unwrap();
    for again in [
        ledger.settle(&t, a.id, charge, T0 + 2).map(|_| ()),
        ledger.release(&t, a.id, T0 + 2).map(|_| ()),
    ] {
        let err = again.unwrap_err();
        assert!(matches!(err, LedgerError::UnknownReservation { .. }), "{err:?}");
        assert!(err.to_string().contains("nothing was changed"), "{err}");
    }
    // Another tenant cannot close this tenant's reservation either.
    let other = TenantId::new("other").unwrap();
    ledger.set_limits(&other, TenantLimits::monthly(NanoUsd::from_usd(1)));
    let b = ledger.reserve(&t, req(100, 1, T0)).unwrap();
    assert!(ledger.release(&other, b.id, T0 + 3).is_err());
    let state = ledger.snapshot(&t, T0 + 4).unwrap();
    assert_eq!(
        (state.spent, state.reserved, state.open_reservations),
        (NanoUsd(80), NanoUsd(100), 1)
    );
}

#[test]
fn settle_may_charge_more_than_held() {
    let (ledger, t) = ledger(TenantLimits::monthly(NanoUsd(1_000)));
    let a = ledger.reserve(&t, req(900, 1, T0)).unwrap();
    let s = ledger
        .settle(
            &t,
            a.id,
            Actual {
                cost: NanoUsd(1_200),
                tokens: 7,
            },
            T0 + 1,
        )
        .unwrap();
    assert_eq!(
        (s.held, s.charged, s.period_spent),
        (NanoUsd(900), NanoUsd(1_200), NanoUsd(1_200))
    );
    let state = ledger.snapshot(&t, T0 + 2).unwrap();
    assert_eq!(
        (state.spent, state.reserved, state.used_tokens),
        (NanoUsd(1_200), NanoUsd::ZERO, 7)
    );
    // Over the limit through settlement only; admission stays closed.
    assert!(matches!(
        ledger.reserve(&t, req(0, 0, T0 + 3)),
        Err(ReserveError::Budget { .. })
    ));
}

#[test]
fn admission_counts_open_calls_at_their_ceiling_so_settles_above_the_hold_stay_inside() {
    let (ledger, t) = ledger(TenantLimits::monthly(NanoUsd(1_000)));
    let with_ceiling = |now| ReserveRequest {
        ceiling: Some(NanoUsd(400)),
        ..req(100, 1, now)
    };
    let a = ledger.reserve(&t, with_ceiling(T0)).unwrap();
    let b = ledger.reserve(&t, with_ceiling(T0 + 1)).unwrap();
    // Two holds of 100 whose calls may reach 400 each: a third does not fit.
    let err = ledger.reserve(&t, with_ceiling(T0 + 2)).unwrap_err();
    assert!(
        matches!(
            err,
            ReserveError::Budget {
                requested: NanoUsd(400),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        ledger.snapshot(&t, T0 + 2).unwrap().reserved,
        NanoUsd(200),
        "the holds are the estimates"
    );
    // Both estimates were 4x low: the budget still holds.
    for r in [a, b] {
        ledger
            .settle(
                &t,
                r.id,
                Actual {
                    cost: NanoUsd(400),
                    tokens: 1,
                },
                T0 + 3,
            )
            .unwrap();
    }
    assert_eq!(ledger.snapshot(&t, T0 + 3).unwrap().spent, NanoUsd(800));
    // Settled, the exposure is gone: 200 more fits at its ceiling of 200.
    ledger
        .reserve(
            &t,
            ReserveRequest {
                ceiling: Some(NanoUsd(200)),
                ..req(50, 1, T0 + 4)
            },
        )
        .unwrap();
}

#[test]
fn reservations_expire_after_the_ttl() {
    let (ledger, t) = ledger(TenantLimits::monthly(NanoUsd(1_000)));
    let a = ledger.reserve(&t, req(700, 1, T0)).unwrap();
    assert_eq!(a.expires_at_ms, T0 + 5 * MINUTE);
    assert!(ledger.reserve(&t, req(700, 1, T0 + 1)).is_err());
    assert_eq!(ledger.expire(a.expires_at_ms - 1).unwrap(), 0);
    assert_eq!(ledger.expire(a.expires_at_ms).unwrap(), 1);
    assert_eq!(ledger.snapshot(&t, a.expires_at_ms).unwrap().reserved, NanoUsd::ZERO);
    // The call outlived its hold but ran: a late settle still charges, never free.
    let late = ledger
        .settle(
            &t,
            a.id,
            Actual {
                cost: NanoUsd(650),
                tokens: 3,
            },
            a.expires_at_ms + 1,
        )
        .expect("a late settle charges");
    assert!(late.late && late.held == NanoUsd::ZERO, "{late:?}");
    assert_eq!(late.charged, NanoUsd(650));
    let state = ledger.snapshot(&t, a.expires_at_ms + 1).unwrap();
    assert_eq!(
        (state.spent, state.reserved, state.used_tokens),
        (NanoUsd(650), NanoUsd::ZERO, 3)
    );
    // Exactly once: the same id cannot be charged again.
    assert!(matches!(
        ledger.settle(
            &t,
            a.id,
            Actual {
                cost: NanoUsd(650),
                tokens: 3
            },
            a.expires_at_ms + 2
        ),
        Err(LedgerError::UnknownReservation { .. })
    ));
    // A release after the expiry has nothing to return, and says why.
    let b = ledger.reserve(&t, req(100, 1, a.expires_at_ms + 3)).unwrap();
    ledger.expire(b.expires_at_ms).unwrap();
    let err = ledger.release(&t, b.id, b.expires_at_ms + 1).unwrap_err();
    assert_eq!(
        err,
        LedgerError::Expired {
            tenant: t.clone(),
            id: b.id,
            expired_at_ms: b.expires_at_ms
        }
    );
    assert!(err.to_string().contains("Raise the reservation TTL"), "{err}");
}

#[test]
fn a_tenants_own_calls_expire_its_stale_holds() {
    let (ledger, t) = ledger(TenantLimits::monthly(NanoUsd(1_000)));
    let a = ledger.reserve(&t, req(700, 1, T0)).unwrap();
    // No sweep ran, but the reservation is past its time: it holds nothing.
    ledger.reserve(&t, req(700, 1, a.expires_at_ms)).unwrap();
    assert!(matches!(
        ledger.release(&t, a.id, a.expires_at_ms),
        Err(LedgerError::Expired { .. })
    ));
}

#[test]
fn included_tokens_are_tracked_per_period() {
    let limits = TenantLimits {
        included_tokens: 1_000_000,
        ..TenantLimits::monthly(NanoUsd::from_usd(5))
    };
    let (ledger, t) = ledger(limits);
    for i in 0..3 {
        let r = ledger.reserve(&t, req(10, 5_000, T0 + i)).unwrap();
        ledger
            .settle(
                &t,
                r.id,
                Actual {
                    cost: NanoUsd(5),
                    tokens: 1_234,
                },
                T0 + i,
            )
            .unwrap();
    }
    let state = ledger.snapshot(&t, T0 + 10).unwrap();
    assert_eq!((state.included_tokens, state.used_tokens), (1_000_000, 3 * 1_234));
}

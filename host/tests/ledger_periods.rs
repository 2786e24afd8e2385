//! Budget periods align to calendar boundaries in the tenant's time zone,
//! across month ends and DST changes, and spend resets at each boundary.

use chrono::DateTime;
use chrono_tz::Tz;
use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, Ledger, LedgerSettings, MemoryStore, Period, PeriodBounds, ReserveRequest, TenantLimits,
};
use tollgate_host::money::NanoUsd;

fn ms(rfc3339: &str) -> u64 {
    u64::try_from(DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_millis()).unwrap()
}

fn bounds(period: Period, tz: Tz, at: &str) -> (u64, u64) {
    let PeriodBounds { start_ms, end_ms } = period.containing(tz, ms(at));
    (start_ms, end_ms)
}

const HOUR: u64 = 3_600_000;

#[test]
fn new_york_days_around_dst_changes() {
    let ny = chrono_tz::America::New_York;
    // 2025-03-09: clocks spring forward at 02:00 EST; the day has 23 hours.
    let (start, end) = bounds(Period::Daily, ny, "2025-03-09T12:00:00-04:00");
    assert_eq!(
        (start, end),
        (ms("2025-03-09T00:00:00-05:00"), ms("2025-03-10T00:00:00-04:00"))
    );
    assert_eq!(end - start, 23 * HOUR);
    // 2025-11-02: clocks fall back at 02:00 EDT; the day has 25 hours.
    let (start, end) = bounds(Period::Daily, ny, "2025-11-02T01:30:00-05:00");
    assert_eq!(
        (start, end),
        (ms("2025-11-02T00:00:00-04:00"), ms("2025-11-03T00:00:00-05:00"))
    );
    assert_eq!(end - start, 25 * HOUR);
    // The last instant of the day still belongs to it; the next begins the next day.
    let next = Period::Daily.containing(ny, end);
    assert_eq!(next.start_ms, end);
    assert_eq!(Period::Daily.containing(ny, end - 1).end_ms, end);
}

#[test]
fn berlin_weeks_start_on_monday_across_dst() {
    let berlin = chrono_tz::Europe::Berlin;
    // Sunday 2025-03-30 is the day Europe springs forward; its week began Monday 03-24 (CET).
    let (start, end) = bounds(Period::Weekly, berlin, "2025-03-30T23:59:59+02:00");
    assert_eq!(
        (start, end),
        (ms("2025-03-24T00:00:00+01:00"), ms("2025-03-31T00:00:00+02:00"))
    );
    assert_eq!(end - start, 7 * 24 * HOUR - HOUR);
    // The week holding the autumn change (2025-10-26) is an hour longer.
    let (start, end) = bounds(Period::Weekly, berlin, "2025-10-22T08:00:00+02:00");
    assert_eq!(
        (start, end),
        (ms("2025-10-20T00:00:00+02:00"), ms("2025-10-27T00:00:00+01:00"))
    );
    assert_eq!(end - start, 7 * 24 * HOUR + HOUR);
    // Monday at local midnight is already the new week, though UTC still says Sunday.
    let (start, _) = bounds(Period::Weekly, berlin, "2025-10-26T23:30:00Z");
    assert_eq!(start, ms("2025-10-27T00:00:00+01:00"));
}

#[test]
fn months_end_at_local_midnight() {
    let ny = chrono_tz::America::New_York;
    // 2025-03-31T23:30 in New York is already April in UTC, but still March there.
    let (start, end) = bounds(Period::Monthly, ny, "2025-04-01T03:30:00Z");
    assert_eq!(
        (start, end),
        (ms("2025-03-01T00:00:00-05:00"), ms("2025-04-01T00:00:00-04:00"))
    );
    // December rolls into the next year; February of a leap year has 29 days.
    let (start, end) = bounds(Period::Monthly, Tz::UTC, "2024-12-31T23:59:59Z");
    assert_eq!((start, end), (ms("2024-12-01T00:00:00Z"), ms("2025-01-01T00:00:00Z")));
    let (start, end) = bounds(Period::Monthly, Tz::UTC, "2024-02-29T12:00:00Z");
    assert_eq!(end - start, 29 * 24 * HOUR);
    // Tokyo is ahead: its March starts on Feb 28 in UTC.
    let (start, _) = bounds(Period::Monthly, chrono_tz::Asia::Tokyo, "2025-02-28T16:00:00Z");
    assert_eq!(start, ms("2025-03-01T00:00:00+09:00"));
}

fn ledger_in(period: Period, tz: Tz) -> (Ledger<MemoryStore>, TenantId) {
    let ledger = Ledger::new(
        MemoryStore::new(),
        LedgerSettings {
            reservation_ttl_ms: 10 * 60_000,
        },
    );
    let tenant = TenantId::new("tz-tenant").unwrap();
    let limits = TenantLimits {
        budget: NanoUsd(1_000),
        period,
        time_zone: tz,
        rpm: None,
        tpm: None,
        included_tokens: 0,
    };
    ledger.set_limits(&tenant, limits);
    (ledger, tenant)
}

fn spend(ledger: &Ledger<MemoryStore>, t: &TenantId, cost: u64, now_ms: u64) {
    let r = ledger
        .reserve(
            t,
            ReserveRequest {
                cost: NanoUsd(cost),
                tokens: 1,
                now_ms,
                ceiling: None,
            },
        )
        .unwrap();
    ledger
        .settle(
            t,
            r.id,
            Actual {
                cost: NanoUsd(cost),
                tokens: 1,
            },
            now_ms,
        )
        .unwrap();
}

#[test]
fn spend_resets_at_the_month_end_and_the_old_total_stays_queryable() {
    let (ledger, t) = ledger_in(Period::Monthly, chrono_tz::Europe::Berlin);
    let last_minute = ms("2025-01-31T23:59:00+01:00");
    spend(&ledger, &t, 900, last_minute);
    assert!(
        ledger
            .reserve(
                &t,
                ReserveRequest {
                    cost: NanoUsd(200),
                    tokens: 1,
                    now_ms: last_minute,
                    ceiling: None,
                }
            )
            .is_err()
    );
    let february = ms("2025-02-01T00:00:00+01:00");
    let state = ledger.snapshot(&t, february).unwrap();
    assert_eq!((state.spent, state.period_start_ms), (NanoUsd::ZERO, february));
    assert_eq!(state.period_end_ms, ms("2025-03-01T00:00:00+01:00"));
    spend(&ledger, &t, 200, february);
    let history = ledger.history(&t).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (history[0].start_ms, history[0].end_ms, history[0].spent),
        (ms("2025-01-01T00:00:00+01:00"), february, NanoUsd(900))
    );
    assert_eq!(
        (history[1].start_ms, history[1].spent, history[1].calls),
        (february, NanoUsd(200), 1)
    );
}

#[test]
fn a_call_straddling_the_boundary_is_charged_to_the_period_that_admitted_it() {
    let (ledger, t) = ledger_in(Period::Daily, chrono_tz::America::New_York);
    let before = ms("2025-03-08T23:59:30-05:00");
    let r = ledger
        .reserve(
            &t,
            ReserveRequest {
                cost: NanoUsd(600),
                tokens: 1,
                now_ms: before,
                ceiling: None,
            },
        )
        .unwrap();
    let after = ms("2025-03-09T00:00:30-05:00");
    // The new day's admissions still see the hold: it is money in flight.
    let state = ledger.snapshot(&t, after).unwrap();
    assert_eq!(
        (state.spent, state.reserved, state.period_start_ms),
        (NanoUsd::ZERO, NanoUsd(600), after - 30_000)
    );
    assert!(
        ledger
            .reserve(
                &t,
                ReserveRequest {
                    cost: NanoUsd(500),
                    tokens: 1,
                    now_ms: after,
                    ceiling: None,
                }
            )
            .is_err()
    );
    let settled = ledger
        .settle(
            &t,
            r.id,
            Actual {
                cost: NanoUsd(550),
                tokens: 1,
            },
            after,
        )
        .unwrap();
    assert_eq!(settled.period_start_ms, ms("2025-03-08T00:00:00-05:00"));
    let state = ledger.snapshot(&t, after).unwrap();
    assert_eq!((state.spent, state.reserved), (NanoUsd::ZERO, NanoUsd::ZERO));
    assert_eq!(ledger.history(&t).unwrap()[0].spent, NanoUsd(550));
}

#[test]
fn daily_rollover_on_the_short_and_long_dst_days() {
    for (tz, day_start, next_day) in [
        (
            chrono_tz::America::New_York,
            "2025-03-09T00:00:00-05:00",
            "2025-03-10T00:00:00-04:00",
        ),
        (
            chrono_tz::America::New_York,
            "2025-11-02T00:00:00-04:00",
            "2025-11-03T00:00:00-05:00",
        ),
        (
            chrono_tz::Europe::Berlin,
            "2025-03-30T00:00:00+01:00",
            "2025-03-31T00:00:00+02:00",
        ),
        (
            chrono_tz::Europe::Berlin,
            "2025-10-26T00:00:00+02:00",
            "2025-10-27T00:00:00+01:00",
        ),
    ] {
        let (ledger, t) = ledger_in(Period::Daily, tz);
        let (start, end) = (ms(day_start), ms(next_day));
        spend(&ledger, &t, 1_000, start);
        // Full all day, including the hour that DST adds or removes...
        assert!(
            ledger
                .reserve(
                    &t,
                    ReserveRequest {
                        cost: NanoUsd(1),
                        tokens: 1,
                        now_ms: end - 1,
                        ceiling: None,
                    }
                )
                .is_err(),
            "{tz}"
        );
        // ...and empty from the next local midnight.
        let state = ledger.snapshot(&t, end).unwrap();
        assert_eq!((state.spent, state.period_start_ms), (NanoUsd::ZERO, end), "{tz}");
        spend(&ledger, &t, 1_000, end);
    }
}

#[test]
fn weekly_rollover_on_monday() {
    let (ledger, t) = ledger_in(Period::Weekly, chrono_tz::America::New_York);
    // Sunday 2025-11-02 (the fall-back day) is the last day of its week.
    spend(&ledger, &t, 1_000, ms("2025-10-27T09:00:00-04:00"));
    assert!(
        ledger
            .reserve(
                &t,
                ReserveRequest {
                    cost: NanoUsd(1),
                    tokens: 1,
                    now_ms: ms("2025-11-02T23:59:59-05:00"),
                    ceiling: None,
                }
            )
            .is_err()
    );
    let monday = ms("2025-11-03T00:00:00-05:00");
    let state = ledger.snapshot(&t, monday).unwrap();
    assert_eq!(
        (state.spent, state.period_start_ms, state.period_end_ms),
        (NanoUsd::ZERO, monday, ms("2025-11-10T00:00:00-05:00"))
    );
}

#[test]
fn a_late_clock_reading_never_reopens_a_closed_period() {
    let (ledger, t) = ledger_in(Period::Daily, Tz::UTC);
    let midnight = ms("2025-05-02T00:00:00Z");
    spend(&ledger, &t, 100, midnight);
    // Another thread's clock read a moment earlier: it counts in the new day.
    spend(&ledger, &t, 100, midnight - 5);
    let state = ledger.snapshot(&t, midnight + 1).unwrap();
    assert_eq!((state.spent, state.period_start_ms), (NanoUsd(200), midnight));
}

//! `local-time` and `weekday`: the call's arrival time on the tenant's wall
//! clock, and the budget period's days, computed by the host from the IANA
//! time-zone database so that policies never derive them (and never get
//! daylight-saving time wrong).

use chrono::{DateTime, Datelike, NaiveDate, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use wasmtime::component::{ComponentType, Lift, Lower};

/// `weekday`.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum Weekday {
    #[component(name = "monday")]
    Monday,
    #[component(name = "tuesday")]
    Tuesday,
    #[component(name = "wednesday")]
    Wednesday,
    #[default]
    #[component(name = "thursday")]
    Thursday,
    #[component(name = "friday")]
    Friday,
    #[component(name = "saturday")]
    Saturday,
    #[component(name = "sunday")]
    Sunday,
}

impl From<chrono::Weekday> for Weekday {
    fn from(day: chrono::Weekday) -> Self {
        match day {
            chrono::Weekday::Mon => Weekday::Monday,
            chrono::Weekday::Tue => Weekday::Tuesday,
            chrono::Weekday::Wed => Weekday::Wednesday,
            chrono::Weekday::Thu => Weekday::Thursday,
            chrono::Weekday::Fri => Weekday::Friday,
            chrono::Weekday::Sat => Weekday::Saturday,
            chrono::Weekday::Sun => Weekday::Sunday,
        }
    }
}

/// `local-time`. The default is the Unix epoch in UTC (a Thursday).
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct LocalTime {
    #[component(name = "time-zone")]
    pub time_zone: String,
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub weekday: Weekday,
    pub hour: u8,
    pub minute: u8,
    #[component(name = "utc-offset-minutes")]
    pub utc_offset_minutes: i32,
}

impl Default for LocalTime {
    fn default() -> Self {
        LocalTime::at(Tz::UTC, 0)
    }
}

impl LocalTime {
    /// `now_ms` in `zone`. A time beyond the calendar's range (about
    /// 262,000 years) reads as the epoch.
    pub fn at(zone: Tz, now_ms: u64) -> LocalTime {
        let local = instant(now_ms).with_timezone(&zone);
        // Each value is within its field's range by construction.
        LocalTime {
            time_zone: zone.name().to_owned(),
            year: local.year(),
            month: local.month() as u8,
            day: local.day() as u8,
            weekday: local.weekday().into(),
            hour: local.hour() as u8,
            minute: local.minute() as u8,
            utc_offset_minutes: local.offset().fix().local_minus_utc() / 60,
        }
    }
}

/// The period's whole days before `now_ms` and its days from `now_ms` on
/// (today included), in calendar days of `zone`.
pub fn period_days(zone: Tz, start_ms: u64, end_ms: u64, now_ms: u64) -> (u32, u32) {
    let day = |ms: u64| instant(ms).with_timezone(&zone).date_naive();
    let today = day(now_ms);
    let first = day(start_ms);
    // The end is exclusive: the period's last day holds its last millisecond.
    let last = day(end_ms.saturating_sub(1).max(start_ms));
    let days = |from: NaiveDate, to: NaiveDate| u32::try_from((to - from).num_days()).unwrap_or(0);
    let elapsed = days(first, today.min(last));
    let remaining = if today > last {
        0
    } else {
        days(today.max(first), last).saturating_add(1)
    };
    (elapsed, remaining)
}

fn instant(ms: u64) -> DateTime<Utc> {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW_YORK: Tz = chrono_tz::America::New_York;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    fn ms(rfc3339: &str) -> u64 {
        DateTime::parse_from_rfc3339(rfc3339).expect("time").timestamp_millis() as u64
    }

    #[test]
    fn the_same_utc_time_moves_an_hour_across_daylight_saving() {
        // US clocks went forward on Sunday 2026-03-08.
        let before = LocalTime::at(NEW_YORK, ms("2026-03-02T13:30:00Z"));
        let after = LocalTime::at(NEW_YORK, ms("2026-03-09T13:30:00Z"));
        assert_eq!((before.hour, before.minute, before.utc_offset_minutes), (8, 30, -300));
        assert_eq!((after.hour, after.minute, after.utc_offset_minutes), (9, 30, -240));
        assert_eq!(after.weekday, Weekday::Monday);
        assert_eq!((after.year, after.month, after.day), (2026, 3, 9));
        assert_eq!(after.time_zone, "America/New_York");
        // The EU's change comes three weeks later, on 2026-03-29.
        let before = LocalTime::at(BERLIN, ms("2026-03-23T07:30:00Z"));
        let after = LocalTime::at(BERLIN, ms("2026-03-30T07:30:00Z"));
        assert_eq!((before.hour, before.utc_offset_minutes), (8, 60));
        assert_eq!((after.hour, after.utc_offset_minutes), (9, 120));
    }

    #[test]
    fn a_local_date_can_differ_from_the_utc_date() {
        let t = LocalTime::at(NEW_YORK, ms("2026-01-01T02:00:00Z"));
        assert_eq!((t.year, t.month, t.day, t.hour), (2025, 12, 31, 21));
        assert_eq!(t.weekday, Weekday::Wednesday);
    }

    #[test]
    fn an_out_of_range_time_reads_as_the_epoch() {
        assert_eq!(LocalTime::at(Tz::UTC, u64::MAX), LocalTime::default());
        assert_eq!(LocalTime::default().weekday, Weekday::Thursday);
    }

    #[test]
    fn period_days_count_calendar_days_in_the_zone() {
        // March 2026 in New York: 31 days, with a 23-hour day on the 8th.
        let start = ms("2026-03-01T05:00:00Z");
        let end = ms("2026-04-01T04:00:00Z");
        assert_eq!(period_days(NEW_YORK, start, end, start), (0, 31));
        assert_eq!(period_days(NEW_YORK, start, end, ms("2026-03-09T13:30:00Z")), (8, 23));
        assert_eq!(period_days(NEW_YORK, start, end, end - 1), (30, 1));
        // Out of the period: clamped, never negative.
        assert_eq!(period_days(NEW_YORK, start, end, end + 86_400_000), (30, 0));
        assert_eq!(period_days(NEW_YORK, start, end, start - 86_400_000), (0, 31));
    }
}

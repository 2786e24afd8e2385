//! Budget periods: daily, weekly (from Monday) or monthly, aligned to calendar
//! boundaries in the tenant's IANA time zone. A period is a half-open interval
//! of UTC milliseconds, so a DST change makes a day 23 or 25 hours long rather
//! than shifting its boundaries.

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::money::NanoUsd;

/// The length of a budget period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Period {
    Daily,
    /// Starts on Monday, as ISO 8601 weeks do.
    Weekly,
    #[default]
    Monthly,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
        }
    }

    /// The period of this kind that contains `now_ms` in `tz`.
    pub fn containing(self, tz: Tz, now_ms: u64) -> PeriodBounds {
        // Beyond chrono's range (about 262,000 years) the calendar means
        // nothing: treat all of time from `now_ms` on as one period.
        let forever = PeriodBounds {
            start_ms: now_ms,
            end_ms: u64::MAX,
        };
        let Some(now) = i64::try_from(now_ms).ok().and_then(DateTime::from_timestamp_millis) else {
            return forever;
        };
        let today = now.with_timezone(&tz).date_naive();
        let (first, next) = match self {
            Period::Daily => (Some(today), today.checked_add_days(Days::new(1))),
            Period::Weekly => {
                let monday = today.checked_sub_days(Days::new(u64::from(today.weekday().num_days_from_monday())));
                (monday, monday.and_then(|d| d.checked_add_days(Days::new(7))))
            }
            Period::Monthly => {
                let first = today.with_day(1);
                let next = if today.month() == 12 {
                    NaiveDate::from_ymd_opt(today.year().saturating_add(1), 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(today.year(), today.month() + 1, 1)
                };
                (first, next)
            }
        };
        let (Some(first), Some(next)) = (first, next) else {
            return forever;
        };
        let start_ms = day_start_ms(tz, first).unwrap_or(0).min(now_ms);
        let end_ms = day_start_ms(tz, next).unwrap_or(u64::MAX).max(now_ms.saturating_add(1));
        PeriodBounds { start_ms, end_ms }
    }
}

/// The first instant of a local calendar day, in UTC milliseconds (clamped at
/// the Unix epoch). Where DST makes midnight ambiguous the earlier instant
/// counts; where midnight is skipped (e.g. São Paulo before 2019) the day
/// starts at the first local time that exists.
fn day_start_ms(tz: Tz, day: NaiveDate) -> Option<u64> {
    let midnight = day.and_time(NaiveTime::MIN);
    let instant = match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        // Gaps are at most a few hours: the first minute after the gap that
        // exists is the instant of the transition.
        LocalResult::None => (1..=24 * 60).find_map(|minute| {
            let local = midnight.checked_add_signed(chrono::TimeDelta::try_minutes(minute)?)?;
            tz.from_local_datetime(&local).earliest().map(|t| t.with_timezone(&Utc))
        })?,
    };
    Some(u64::try_from(instant.timestamp_millis()).unwrap_or(0))
}

/// A period as UTC milliseconds: `start_ms` inclusive, `end_ms` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeriodBounds {
    pub start_ms: u64,
    pub end_ms: u64,
}

impl PeriodBounds {
    pub fn contains(&self, now_ms: u64) -> bool {
        self.start_ms <= now_ms && now_ms < self.end_ms
    }
}

/// What was charged in one period: the current one, or a closed one kept
/// for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodTotals {
    pub start_ms: u64,
    pub end_ms: u64,
    /// Money charged by settled calls.
    pub spent: NanoUsd,
    /// Tokens of settled calls, counted against the tier's included tokens.
    pub used_tokens: u64,
    /// Number of settled calls.
    pub calls: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        let t = DateTime::parse_from_rfc3339(rfc3339).expect("test timestamp");
        u64::try_from(t.timestamp_millis()).expect("after 1970")
    }

    #[test]
    fn out_of_range_times_do_not_panic() {
        let b = Period::Monthly.containing(Tz::UTC, u64::MAX);
        assert_eq!((b.start_ms, b.end_ms), (u64::MAX, u64::MAX));
        let b = Period::Daily.containing(chrono_tz::Asia::Tokyo, 0);
        assert_eq!(b.start_ms, 0, "clamped at the epoch");
        assert_eq!(b.end_ms, ms("1970-01-01T15:00:00Z"));
    }

    #[test]
    fn skipped_midnight_starts_the_day_after_the_gap() {
        // São Paulo sprang forward at midnight on 2018-11-04: 00:00 -03 became 01:00 -02.
        let b = Period::Daily.containing(chrono_tz::America::Sao_Paulo, ms("2018-11-04T12:00:00Z"));
        assert_eq!(b.start_ms, ms("2018-11-04T03:00:00Z"));
        assert_eq!(b.end_ms, ms("2018-11-05T02:00:00Z"));
    }
}

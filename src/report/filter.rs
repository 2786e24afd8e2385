//! Which calls a report counts: a time window and a set of tenants.

use std::collections::HashSet;

use anyhow::{Result, bail};
use chrono::{DateTime, NaiveDate, Utc};

use super::group::Call;

/// A record's `timestamp` (RFC 3339, any offset), in UTC.
pub fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(|e| format!("timestamp {:?} is not RFC 3339: {e}", clip(text)))
}

fn clip(text: &str) -> &str {
    text.char_indices().nth(40).map_or(text, |(i, _)| &text[..i])
}

/// Which end of the window a bound is.
#[derive(Clone, Copy)]
enum Bound {
    Since,
    Until,
}

/// `--since` / `--until`: an RFC 3339 time, or a date (UTC). `--since` is
/// inclusive; `--until` is exclusive, but a date means the whole of that day.
fn parse_bound(text: &str, bound: Bound) -> Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let day = match bound {
            Bound::Since => Some(date),
            Bound::Until => date.succ_opt(),
        };
        if let Some(midnight) = day.and_then(|d| d.and_hms_opt(0, 0, 0)) {
            return Ok(midnight.and_utc());
        }
    }
    let flag = match bound {
        Bound::Since => "--since",
        Bound::Until => "--until",
    };
    bail!("{flag} {text:?} is neither a date (2026-11-01) nor an RFC 3339 time (2026-11-01T09:30:00Z)")
}

pub struct Filter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    tenants: HashSet<String>,
}

impl Filter {
    pub fn new(since: Option<&str>, until: Option<&str>, tenants: &[String]) -> Result<Filter> {
        let since = since.map(|s| parse_bound(s, Bound::Since)).transpose()?;
        let until = until.map(|s| parse_bound(s, Bound::Until)).transpose()?;
        if let (Some(since), Some(until)) = (since, until)
            && since >= until
        {
            bail!("--since {since} is not before --until {until}: the window holds nothing");
        }
        Ok(Filter {
            since,
            until,
            tenants: tenants.iter().cloned().collect(),
        })
    }

    pub fn admits(&self, call: &Call) -> bool {
        self.since.is_none_or(|s| call.at >= s)
            && self.until.is_none_or(|u| call.at < u)
            && (self.tenants.is_empty() || self.tenants.contains(call.tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_whole_days_and_times_are_exact() {
        let f = Filter::new(Some("2026-11-01"), Some("2026-11-02"), &[]).expect("filter");
        assert_eq!(f.since.expect("since").to_rfc3339(), "2026-11-01T00:00:00+00:00");
        assert_eq!(f.until.expect("until").to_rfc3339(), "2026-11-03T00:00:00+00:00");
        let f = Filter::new(Some("2026-11-01T10:00:00+02:00"), None, &[]).expect("filter");
        assert_eq!(f.since.expect("since").to_rfc3339(), "2026-11-01T08:00:00+00:00");
    }

    #[test]
    fn bad_bounds_say_what_is_expected() {
        let err = Filter::new(Some("yesterday"), None, &[])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("--since \"yesterday\"") && err.contains("2026-11-01"),
            "{err}"
        );
        assert!(Filter::new(Some("2026-11-02"), Some("2026-11-01"), &[]).is_err());
        assert!(parse_timestamp("2026-13-01T00:00:00Z").is_err());
    }
}

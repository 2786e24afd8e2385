//! The wall clock in milliseconds since the Unix epoch: the time records,
//! ledgers and policies see. One definition, so they all read it alike.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the epoch; 0 for a clock set before it.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// SigV4's `YYYYMMDDTHHMMSSZ` for seconds since the epoch, field by field
/// (it is written on every signed call); `None` past what it can name.
#[cfg(feature = "bedrock")]
pub(crate) fn amz_date_time(secs: i64) -> Option<String> {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp(secs, 0)?;
    let text = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    (text.len() == 16).then_some(text)
}

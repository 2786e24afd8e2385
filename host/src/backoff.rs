//! Retry waits: exponential, capped, with jitter, and at least what the
//! other side asked for in `Retry-After` (up to the cap). One rule for every
//! client in the crate (the Bedrock upstream, alert webhooks).

use std::time::Duration;

/// The wait before retry number `attempt` (1 for the first retry):
/// "equal jitter", half of the exponential step fixed so waits keep growing,
/// half random so retrying callers spread out.
pub(crate) fn delay(attempt: u32, initial_ms: u64, max_ms: u64, retry_after: Option<Duration>) -> Duration {
    let step = initial_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(32))
        .min(max_ms);
    let jittered = step / 2 + fastrand::u64(0..=step - step / 2);
    let wanted = retry_after.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Duration::from_millis(jittered.max(wanted.min(max_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_is_capped_and_honours_retry_after() {
        for attempt in 1..40 {
            let wait = delay(attempt, 100, 400, None);
            assert!(wait <= Duration::from_millis(400), "{wait:?}");
        }
        assert!(delay(3, 100, 10_000, None) >= Duration::from_millis(200));
        assert_eq!(
            delay(1, 100, 400, Some(Duration::from_secs(1))),
            Duration::from_millis(400)
        );
        assert_eq!(delay(1, 0, 0, None), Duration::ZERO);
    }
}

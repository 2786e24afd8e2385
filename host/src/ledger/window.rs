//! Per-minute request and token windows (RPM and TPM). A window is one
//! calendar minute of UTC time; it only moves forward, so a call whose clock
//! reading is a little behind another thread's counts in the newer minute
//! instead of reopening an old one.

use super::error::ReserveError;

pub const MINUTE_MS: u64 = 60_000;

/// Requests and tokens admitted in one minute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinuteWindow {
    /// Minutes since the Unix epoch.
    minute: u64,
    requests: u32,
    /// Estimated tokens of open calls, real tokens of settled ones.
    tokens: u64,
}

impl MinuteWindow {
    /// The minute that `now_ms` counts in.
    pub fn minute(&self) -> u64 {
        self.minute
    }

    /// Start a new window when `now_ms` is in a later minute.
    pub fn advance(&mut self, now_ms: u64) {
        let minute = now_ms / MINUTE_MS;
        if minute > self.minute {
            *self = MinuteWindow {
                minute,
                requests: 0,
                tokens: 0,
            };
        }
    }

    pub fn requests(&self) -> u32 {
        self.requests
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Whether one more request of `tokens` fits; the error names the limit
    /// that would be broken. Call [`advance`](Self::advance) first.
    pub fn check(&self, rpm: Option<u32>, tpm: Option<u64>, tokens: u64, now_ms: u64) -> Result<(), ReserveError> {
        let retry_after_ms = (self.minute.saturating_add(1).saturating_mul(MINUTE_MS)).saturating_sub(now_ms);
        if let Some(limit) = tpm
            && self.tokens.saturating_add(tokens) > limit
        {
            return Err(ReserveError::Tpm {
                limit,
                used: self.tokens,
                requested: tokens,
                retry_after_ms,
            });
        }
        if let Some(limit) = rpm
            && self.requests >= limit
        {
            return Err(ReserveError::Rpm {
                limit,
                used: self.requests,
                retry_after_ms,
            });
        }
        Ok(())
    }

    pub fn admit(&mut self, tokens: u64) {
        self.requests = self.requests.saturating_add(1);
        self.tokens = self.tokens.saturating_add(tokens);
    }

    /// Replace a call's estimated tokens by its real ones (or by 0 when it is
    /// released), if it was admitted in this window. A released call still
    /// counts as a request: retries must not bypass RPM.
    pub fn correct(&mut self, admitted_minute: u64, estimated: u64, actual: u64) {
        if admitted_minute == self.minute {
            self.tokens = self.tokens.saturating_sub(estimated).saturating_add(actual);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_forward_only() {
        let mut w = MinuteWindow::default();
        w.advance(5 * MINUTE_MS + 10);
        w.admit(100);
        w.advance(5 * MINUTE_MS - 1);
        assert_eq!((w.minute(), w.requests(), w.tokens()), (5, 1, 100));
        w.advance(6 * MINUTE_MS);
        assert_eq!((w.minute(), w.requests(), w.tokens()), (6, 0, 0));
    }

    #[test]
    fn corrections_apply_to_their_own_minute() {
        let mut w = MinuteWindow::default();
        w.advance(MINUTE_MS);
        w.admit(100);
        w.correct(1, 100, 250);
        assert_eq!(w.tokens(), 250);
        w.correct(0, 250, 0);
        assert_eq!(w.tokens(), 250, "an older minute's call does not touch this window");
    }
}

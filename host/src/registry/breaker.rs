//! A circuit breaker per policy version: a policy that fails call after call
//! is skipped for a while, and its tenant's failure mode decides at once.
//!
//! Without it a broken policy costs its whole deadline (up to a second of a
//! decision thread) on every call, and that time is taken from every other
//! tenant. States:
//! - closed: calls run; consecutive failures are counted.
//! - open: after `threshold` failures in a row, calls are not run for a
//!   cool-down (doubling on each trip, at most [`MAX_COOLDOWN`]).
//! - half-open: when the cool-down ends, one call runs as a trial; the others
//!   still fail fast until it reports. A success closes the breaker.
//!
//! Lock-free: a handful of atomics read on every call.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest a breaker stays open before its next trial call.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(30);

/// When the breaker trips and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open the breaker; 0 turns it off.
    pub threshold: u32,
    /// The first cool-down; each further trip doubles it.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            threshold: 10,
            cooldown: Duration::from_secs(1),
        }
    }
}

/// Why a call was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Open {
    /// Failures in a row so far.
    pub failures: u32,
    /// Until the next trial call.
    pub remaining: Duration,
}

pub(crate) struct Breaker {
    settings: BreakerSettings,
    failures: AtomicU32,
    trips: AtomicU32,
    /// Monotonic ms (see [`mono_ms`]) until which calls are skipped; 0 = closed.
    open_until: AtomicU64,
    /// A half-open trial call is running.
    trial: AtomicBool,
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            failures: AtomicU32::new(0),
            trips: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            trial: AtomicBool::new(false),
        }
    }

    /// `Ok` when this call may run; `Err` while the breaker is open.
    pub(crate) fn check(&self) -> Result<(), Open> {
        self.check_at(mono_ms())
    }

    fn check_at(&self, now: u64) -> Result<(), Open> {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let open = |until: u64| Open {
            failures: self.failures.load(Ordering::Relaxed),
            remaining: Duration::from_millis(until.saturating_sub(now)),
        };
        if now < until {
            return Err(open(until));
        }
        // Half-open: the caller that moves the window runs the one trial;
        // the window keeps the others failing fast until it reports.
        let trial_window = now + self.cooldown_ms(self.trips.load(Ordering::Relaxed));
        match self
            .open_until
            .compare_exchange(until, trial_window, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.trial.store(true, Ordering::Release);
                Ok(())
            }
            Err(0) => Ok(()),
            Err(current) => Err(open(current)),
        }
    }

    pub(crate) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.trips.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.trial.store(false, Ordering::Relaxed);
            self.open_until.store(0, Ordering::Release);
        }
    }

    /// Counts a failure; returns the cool-down when this one tripped the breaker.
    pub(crate) fn failure(&self) -> Option<Duration> {
        self.failure_at(mono_ms())
    }

    fn failure_at(&self, now: u64) -> Option<Duration> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if self.settings.threshold == 0 || failures < self.settings.threshold {
            return None;
        }
        // Calls already running when the breaker tripped fail too; only a
        // failed trial trips an open breaker again.
        let until = self.open_until.load(Ordering::Acquire);
        if until != 0 && now < until && !self.trial.swap(false, Ordering::AcqRel) {
            return None;
        }
        let trips = self.trips.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let cooldown = self.cooldown_ms(trips);
        self.open_until.store(now + cooldown, Ordering::Release);
        Some(Duration::from_millis(cooldown))
    }

    fn cooldown_ms(&self, trips: u32) -> u64 {
        let base = u64::try_from(self.settings.cooldown.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let doubled = base.saturating_mul(1u64 << trips.saturating_sub(1).min(20));
        doubled.min(MAX_COOLDOWN.as_millis() as u64)
    }
}

/// Milliseconds on a monotonic clock, never 0 (0 means "closed").
fn mono_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cooldown_ms: u64) -> Breaker {
        Breaker::new(BreakerSettings {
            threshold,
            cooldown: Duration::from_millis(cooldown_ms),
        })
    }

    #[test]
    fn opens_after_the_threshold_and_closes_on_success() {
        let b = breaker(3, 60_000);
        assert!(b.failure().is_none());
        assert!(b.failure().is_none());
        assert!(b.check().is_ok());
        assert_eq!(b.failure(), Some(Duration::from_secs(30)), "capped at the maximum");
        let open = b.check().unwrap_err();
        assert_eq!(open.failures, 3);
        assert!(
            b.failure().is_none(),
            "a call in flight when it tripped does not trip it again"
        );
        b.success();
        assert!(b.check().is_ok());
        assert_eq!(b.failures.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let b = breaker(2, 1000);
        assert!(b.failure().is_none());
        b.success();
        assert!(b.failure().is_none());
        assert!(b.check().is_ok());
    }

    #[test]
    fn one_trial_runs_after_the_cooldown_and_a_failed_trial_doubles_it() {
        let b = breaker(1, 1);
        assert_eq!(b.failure_at(100), Some(Duration::from_millis(1)));
        assert!(b.check_at(100).is_err());
        assert!(b.check_at(101).is_ok(), "the trial");
        assert!(b.check_at(101).is_err(), "others fail fast while the trial runs");
        assert_eq!(
            b.failure_at(101),
            Some(Duration::from_millis(2)),
            "a failed trial doubles the cool-down"
        );
        assert!(b.check_at(102).is_err());
        assert!(b.check_at(103).is_ok());
    }

    #[test]
    fn a_zero_threshold_never_opens() {
        let b = breaker(0, 1000);
        for _ in 0..100 {
            assert!(b.failure().is_none());
        }
        assert!(b.check().is_ok());
    }
}

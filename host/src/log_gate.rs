//! A rate limit for log lines that outside input can trigger on every call
//! (a failing policy, a caller's bad usage): one tenant cannot flood the
//! operator's log. Within each second a key gets a few lines; the rest are
//! counted, and the next line that passes says how many were held back.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Keys kept at once; past that the table starts afresh (keys are tenants,
/// so this is only reached by a misuse, and a reset only lets lines through).
const MAX_KEYS: usize = 4_096;

pub(crate) struct LogGate {
    per_second: u32,
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    second: u64,
    emitted: u32,
    suppressed: u64,
}

impl LogGate {
    pub(crate) fn new(per_second: u32) -> LogGate {
        LogGate {
            per_second,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when a line for `key` may be written now, `n` being the lines
    /// held back since the last one written; `None` when it is held back.
    pub(crate) fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, unix_second())
    }

    fn admit_at(&self, key: &str, second: u64) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= MAX_KEYS && !slots.contains_key(key) {
            slots.clear();
        }
        let slot = slots.entry(key.to_owned()).or_default();
        if slot.second != second {
            slot.second = second;
            slot.emitted = 0;
        }
        if slot.emitted < self.per_second {
            slot.emitted += 1;
            Some(std::mem::take(&mut slot.suppressed))
        } else {
            slot.suppressed = slot.suppressed.saturating_add(1);
            None
        }
    }
}

/// Policy failures, per tenant.
pub(crate) static POLICY_FAILURES: LazyLock<LogGate> = LazyLock::new(|| LogGate::new(5));
/// A policy's own log lines, per policy version.
pub(crate) static POLICY_LINES: LazyLock<LogGate> = LazyLock::new(|| LogGate::new(20));
/// Connections the listener could not accept or had to close at its cap.
#[cfg(feature = "gateway")]
pub(crate) static ACCEPT_ERRORS: LazyLock<LogGate> = LazyLock::new(|| LogGate::new(1));
/// Calls charged their hold instead of their usage, per tenant.
#[cfg(feature = "gateway")]
pub(crate) static HOLD_CHARGES: LazyLock<LogGate> = LazyLock::new(|| LogGate::new(5));
/// Calls that found the invocation log's queue full (the disk is stalled).
#[cfg(feature = "gateway")]
pub(crate) static LOG_STALLS: LazyLock<LogGate> = LazyLock::new(|| LogGate::new(1));

fn unix_second() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_a_few_lines_a_second_and_hears_of_the_rest() {
        let gate = LogGate::new(2);
        assert_eq!(gate.admit_at("acme", 10), Some(0));
        assert_eq!(gate.admit_at("acme", 10), Some(0));
        for _ in 0..1_000 {
            assert_eq!(gate.admit_at("acme", 10), None);
        }
        // Another tenant is not held back by acme's flood.
        assert_eq!(gate.admit_at("globex", 10), Some(0));
        // The next second's first line reports what was held back.
        assert_eq!(gate.admit_at("acme", 11), Some(1_000));
        assert_eq!(gate.admit_at("acme", 11), Some(0));
    }
}

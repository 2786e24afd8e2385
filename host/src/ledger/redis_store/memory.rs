//! Redis' memory against its `maxmemory`, read by every probe. A Redis that
//! is full (with `noeviction`, as the fleet asks) refuses every new hold
//! until memory is freed, so each replica warns well before: from 90% of
//! `maxmemory`, once on crossing and then every five minutes while above.
//! Readiness does not change: a Redis at 95% still keeps every charge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// From this share of `maxmemory` (in tenths) a replica warns.
const WARN_AT_TENTHS: u64 = 9;
/// How often the warning repeats while Redis stays above it.
const WARN_EVERY_MS: u64 = 5 * 60 * 1000;

/// What Redis last said of its memory (`INFO memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisMemory {
    /// `used_memory`, in bytes.
    pub used: u64,
    /// `maxmemory`, in bytes; 0 for none.
    pub max: u64,
}

impl RedisMemory {
    /// At or above the warning share of a set `maxmemory`.
    pub fn pressed(&self) -> bool {
        self.max > 0 && self.used.saturating_mul(10) >= self.max.saturating_mul(WARN_AT_TENTHS)
    }

    /// Parses the answer to `INFO memory`; `None` without both fields.
    pub(super) fn parse(info: &str) -> Option<RedisMemory> {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse().ok())
        };
        Some(RedisMemory {
            used: field("used_memory")?,
            max: field("maxmemory")?,
        })
    }
}

/// The probe's view of Redis' memory, and when it last warned.
#[derive(Default)]
pub(super) struct MemoryWatch {
    last: Mutex<Option<RedisMemory>>,
    /// When the last warning was logged (ms since the epoch); 0 while below.
    warned_ms: AtomicU64,
}

impl MemoryWatch {
    pub(super) fn seen(&self, memory: RedisMemory, store: &str, now_ms: u64) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(memory);
        if !memory.pressed() {
            self.warned_ms.store(0, Ordering::Relaxed);
            return;
        }
        let warned = self.warned_ms.load(Ordering::Relaxed);
        if warned != 0 && now_ms.saturating_sub(warned) < WARN_EVERY_MS {
            return;
        }
        self.warned_ms.store(now_ms.max(1), Ordering::Relaxed);
        tracing::warn!(
            store,
            used_bytes = memory.used,
            maxmemory_bytes = memory.max,
            percent = memory.used.saturating_mul(100) / memory.max,
            "Redis is near its maxmemory: once full it refuses every new hold (calls answer 503, or go to the \
             allowance) until memory is freed; raise maxmemory, or give Redis more memory"
        );
    }

    pub(super) fn last(&self) -> Option<RedisMemory> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_used_and_max_memory_and_warns_from_nine_tenths() {
        let info =
            "# Memory\r\nused_memory:950\r\nused_memory_human:950B\r\nmaxmemory:1000\r\nmaxmemory_human:1000B\r\n";
        let memory = RedisMemory::parse(info).expect("parsed");
        assert_eq!(memory, RedisMemory { used: 950, max: 1000 });
        assert!(memory.pressed());
        assert!(!RedisMemory { used: 899, max: 1000 }.pressed());
        assert!(
            !RedisMemory { used: 5000, max: 0 }.pressed(),
            "no maxmemory: nothing to warn of"
        );
        assert_eq!(RedisMemory::parse("# Memory\r\nused_memory:1\r\n"), None);
    }

    #[test]
    fn warns_once_on_crossing_then_every_five_minutes() {
        let watch = MemoryWatch::default();
        let full = RedisMemory { used: 95, max: 100 };
        watch.seen(full, "redis", 1_000);
        assert_eq!(watch.warned_ms.load(Ordering::Relaxed), 1_000);
        watch.seen(full, "redis", 2_000);
        assert_eq!(watch.warned_ms.load(Ordering::Relaxed), 1_000, "not again so soon");
        watch.seen(full, "redis", 1_000 + WARN_EVERY_MS);
        assert_eq!(watch.warned_ms.load(Ordering::Relaxed), 1_000 + WARN_EVERY_MS);
        watch.seen(RedisMemory { used: 10, max: 100 }, "redis", 1);
        assert_eq!(
            watch.warned_ms.load(Ordering::Relaxed),
            0,
            "below: the next crossing warns at once"
        );
        assert_eq!(watch.last(), Some(RedisMemory { used: 10, max: 100 }));
    }
}

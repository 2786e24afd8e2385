//! Shadow mode: a candidate version decides beside the active one on live
//! traffic, and only the active verdict is enforced. The gateway runs the
//! shadow off the caller's path and records here how often the two
//! disagreed and what the shadow would have changed in money.
//!
//! Invariants:
//! - A [`Shadow`] is immutable but for its counters; a new shadow starts
//!   from zero, so a report always describes one candidate.
//! - Money is nano-dollars; the shadow's spend is priced from the call's
//!   real usage, so it is exact wherever both verdicts let the call run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::contract::Action;
use crate::registry::version::PolicyVersion;

/// A candidate version and what it has done so far.
pub struct Shadow {
    version: Arc<PolicyVersion>,
    since_ms: u64,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    calls: AtomicU64,
    agreed: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    unpriced: AtomicU64,
    actual_nano: AtomicU64,
    shadow_nano: AtomicU64,
    /// (active verdict, shadow verdict) → calls, disagreements only.
    pairs: Mutex<BTreeMap<(String, String), u64>>,
}

/// One shadowed call's outcome, as the gateway saw it.
#[derive(Debug, Clone)]
pub struct Compared {
    pub active: Action,
    pub shadow: Action,
    /// The shadow policy failed and its failure mode decided.
    pub shadow_failed: bool,
    /// What the call was charged.
    pub actual_nano_usd: u64,
    /// What the shadow's verdict would have been charged; `None` when it
    /// cannot be known (the shadow would have run a call that never ran).
    pub shadow_nano_usd: Option<u64>,
}

impl Compared {
    pub fn agrees(&self) -> bool {
        self.active == self.shadow
    }
}

/// What a shadow has done, for the admin API and the CLI.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ShadowReport {
    pub shadow_version: String,
    pub since_ms: u64,
    /// Calls both versions decided.
    pub calls: u64,
    pub agreed: u64,
    pub disagreed: u64,
    /// Calls the shadow was not run for: no spare capacity at the time.
    pub skipped: u64,
    /// Calls where the shadow policy failed and its failure mode decided.
    pub shadow_failures: u64,
    /// Disagreements by verdict pair, most frequent first.
    pub pairs: Vec<PairCount>,
    /// What the shadowed calls were charged.
    pub actual_spend_nano_usd: u64,
    /// What they would have been charged under the shadow's verdicts,
    /// over the calls whose cost can be known.
    pub shadow_spend_nano_usd: u64,
    /// `shadow - actual` over the same calls: negative saves money.
    pub shadow_delta_nano_usd: i64,
    /// Calls the shadow would have run that the active version refused:
    /// their cost is unknown and left out of the sums.
    pub unpriced_calls: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PairCount {
    pub active: String,
    pub shadow: String,
    pub calls: u64,
}

/// A verdict as compared and reported: `downgrade:<model>` names the target.
pub fn verdict_key(action: &Action) -> String {
    match action {
        Action::Downgrade(model) => format!("downgrade:{}", crate::text::clip(model, 128)),
        other => other.name().to_owned(),
    }
}

impl Shadow {
    pub(crate) fn new(version: Arc<PolicyVersion>) -> Shadow {
        let since_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Shadow {
            version,
            since_ms,
            stats: Stats::default(),
        }
    }

    pub fn version(&self) -> &Arc<PolicyVersion> {
        &self.version
    }

    /// Counts a call the shadow was not run for.
    pub fn skipped(&self) {
        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one shadowed call.
    pub fn record(&self, compared: &Compared) {
        self.stats.record(compared);
    }

    pub fn report(&self) -> ShadowReport {
        self.stats.report(self.version.id().to_string(), self.since_ms)
    }
}

impl Stats {
    fn record(&self, compared: &Compared) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if compared.shadow_failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if compared.agrees() {
            self.agreed.fetch_add(1, Ordering::Relaxed);
        } else {
            let key = (verdict_key(&compared.active), verdict_key(&compared.shadow));
            let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: a policy naming endless downgrade targets folds into one row.
            let key = if pairs.len() >= 256 && !pairs.contains_key(&key) {
                (compared.active.name().to_owned(), compared.shadow.name().to_owned())
            } else {
                key
            };
            *pairs.entry(key).or_default() += 1;
        }
        match compared.shadow_nano_usd {
            Some(shadow) => {
                self.actual_nano.fetch_add(compared.actual_nano_usd, Ordering::Relaxed);
                self.shadow_nano.fetch_add(shadow, Ordering::Relaxed);
            }
            None => {
                self.unpriced.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn report(&self, shadow_version: String, since_ms: u64) -> ShadowReport {
        let calls = self.calls.load(Ordering::Relaxed);
        let agreed = self.agreed.load(Ordering::Relaxed);
        let actual = self.actual_nano.load(Ordering::Relaxed);
        let shadow = self.shadow_nano.load(Ordering::Relaxed);
        let mut pairs: Vec<PairCount> = self
            .pairs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((active, shadow), calls)| PairCount {
                active: active.clone(),
                shadow: shadow.clone(),
                calls: *calls,
            })
            .collect();
        pairs.sort_by_key(|p| std::cmp::Reverse(p.calls));
        let delta = i128::from(shadow) - i128::from(actual);
        ShadowReport {
            shadow_version,
            since_ms,
            calls,
            agreed,
            disagreed: calls.saturating_sub(agreed),
            skipped: self.skipped.load(Ordering::Relaxed),
            shadow_failures: self.failed.load(Ordering::Relaxed),
            pairs,
            actual_spend_nano_usd: actual,
            shadow_spend_nano_usd: shadow,
            shadow_delta_nano_usd: delta.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            unpriced_calls: self.unpriced.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::RejectKind;

    #[test]
    fn verdict_keys_name_downgrade_targets() {
        assert_eq!(verdict_key(&Action::Admit), "admit");
        assert_eq!(verdict_key(&Action::Downgrade("m".into())), "downgrade:m");
        assert_eq!(verdict_key(&Action::Throttle(5)), "throttle");
        assert_eq!(verdict_key(&Action::Reject(RejectKind::BudgetExhausted)), "reject");
    }

    #[test]
    fn the_report_sums_money_only_over_calls_whose_shadow_cost_is_known() {
        let shadow = Stats::default();
        let compared = |active: Action, shadow: Action, actual, priced| Compared {
            active,
            shadow,
            shadow_failed: false,
            actual_nano_usd: actual,
            shadow_nano_usd: priced,
        };
        shadow.record(&compared(Action::Admit, Action::Admit, 100, Some(100)));
        shadow.record(&compared(
            Action::Admit,
            Action::Reject(RejectKind::Denied),
            70,
            Some(0),
        ));
        shadow.record(&compared(
            Action::Admit,
            Action::Downgrade("cheap".into()),
            50,
            Some(20),
        ));
        shadow.record(&compared(Action::Reject(RejectKind::Denied), Action::Admit, 0, None));
        shadow.skipped.fetch_add(1, Ordering::Relaxed);
        let report = shadow.report("acme@v2".into(), 0);
        assert_eq!((report.calls, report.agreed, report.disagreed), (4, 1, 3));
        assert_eq!((report.skipped, report.unpriced_calls), (1, 1));
        assert_eq!(report.actual_spend_nano_usd, 220);
        assert_eq!(report.shadow_spend_nano_usd, 120);
        assert_eq!(report.shadow_delta_nano_usd, -100);
        assert_eq!(report.pairs.len(), 3);
        assert!(
            report
                .pairs
                .iter()
                .any(|p| p.active == "admit" && p.shadow == "downgrade:cheap" && p.calls == 1)
        );
    }
}

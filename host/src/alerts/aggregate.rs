//! The aggregate level across all tenants: many tenants rising together is a
//! platform event (a bad release, a retry storm, a price change) even when no
//! tenant alone is red.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::InvalidSettings;
use super::events::Figures;
use super::level::{Cause, Hysteresis, Level, LevelState, MultiWindow, Steps, Transition, ratio_bp};

/// When the tenants together raise the aggregate level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AggregateThresholds {
    /// The share rule needs at least this many tenants: one tenant in two is
    /// not "many tenants".
    pub min_tenants: u32,
    /// Tenants at this level or above count as rising. Orange by default:
    /// half the tenants being yellow in mid-month is just a calendar.
    pub share_counts: Level,
    /// The share of tenants rising, in percent, that raises each level.
    pub share_percent: Steps,
    /// Total burn ÷ total baseline (tenants with a baseline), both windows as
    /// for a single tenant. Lower than a tenant's steps: ten tenants each at
    /// 2x is unremarkable alone and remarkable together.
    pub total_burn_percent_of_baseline: Steps,
}

impl Default for AggregateThresholds {
    fn default() -> Self {
        AggregateThresholds {
            min_tenants: 3,
            share_counts: Level::Orange,
            share_percent: Steps::new(20, 40, 60),
            total_burn_percent_of_baseline: Steps::new(150, 200, 300),
        }
    }
}

impl AggregateThresholds {
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let steps = [self.share_percent, self.total_burn_percent_of_baseline];
        for (steps, what) in steps.iter().zip(["share-percent", "total-burn-percent-of-baseline"]) {
            let present: Vec<u32> = [steps.yellow, steps.orange, steps.red].into_iter().flatten().collect();
            if present.windows(2).any(|pair| pair[0] > pair[1]) {
                return Err(InvalidSettings(format!("aggregate {what}: steps must rise")));
            }
        }
        Ok(())
    }
}

/// What one tenant adds to the totals, as of its last observation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Contribution {
    pub level: Level,
    pub figures: Figures,
}

/// Running totals over all tenants and the aggregate's own level.
#[derive(Debug)]
pub struct Aggregate {
    thresholds: AggregateThresholds,
    hysteresis: Hysteresis,
    short_alone_max: Level,
    level: AtomicU8,
    state: Mutex<Totals>,
}

#[derive(Debug, Default)]
struct Totals {
    tenants_at: [u32; 4],
    spent: u128,
    limit: u128,
    forecast: u128,
    burn_short: u128,
    burn_long: u128,
    baseline: u128,
    level: LevelState,
}

impl Totals {
    fn apply(&mut self, c: &Contribution, add: bool) {
        let f = &c.figures;
        let counted = &mut self.tenants_at[c.level as usize];
        *counted = if add {
            counted.saturating_add(1)
        } else {
            counted.saturating_sub(1)
        };
        // Only tenants with a baseline take part in the burn ratio, or a new
        // tenant's first day would look like infinite growth.
        let with_baseline = f.baseline_burn_rate.get() > 0;
        let parts = [
            (&mut self.spent, f.spent.get()),
            (&mut self.limit, f.limit.get()),
            (&mut self.forecast, f.forecast_spend.get()),
            (
                &mut self.burn_short,
                if with_baseline { f.burn_rate_short.get() } else { 0 },
            ),
            (
                &mut self.burn_long,
                if with_baseline { f.burn_rate_long.get() } else { 0 },
            ),
            (&mut self.baseline, f.baseline_burn_rate.get()),
        ];
        for (total, value) in parts {
            *total = if add {
                total.saturating_add(value.into())
            } else {
                total.saturating_sub(value.into())
            };
        }
    }

    fn figures(&self) -> Figures {
        let cap = |v: u128| crate::money::NanoUsd(u64::try_from(v).unwrap_or(u64::MAX));
        Figures {
            spent: cap(self.spent),
            limit: cap(self.limit),
            forecast_spend: cap(self.forecast),
            burn_rate_short: cap(self.burn_short),
            burn_rate_long: cap(self.burn_long),
            baseline_burn_rate: cap(self.baseline),
        }
    }
}

impl Aggregate {
    pub fn new(thresholds: AggregateThresholds, hysteresis: Hysteresis, short_alone_max: Level) -> Self {
        Aggregate {
            thresholds,
            hysteresis,
            short_alone_max,
            level: AtomicU8::new(0),
            state: Mutex::default(),
        }
    }

    /// The current aggregate level: one atomic load.
    pub fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Relaxed))
    }

    /// Replaces one tenant's contribution (`old` is `None` the first time the
    /// tenant is seen) and re-evaluates. Returns the change, if any, with the
    /// totals it was judged on.
    pub fn update(&self, now_ms: u64, old: Option<&Contribution>, new: &Contribution) -> Option<(Transition, Figures)> {
        let mut totals = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = old {
            totals.apply(old, false);
        }
        totals.apply(new, true);
        let assess = |margin| self.assess(&totals, margin);
        let mut level = totals.level.clone();
        let change = level.update(now_ms, &self.hysteresis, false, assess);
        totals.level = level;
        self.level.store(totals.level.level() as u8, Ordering::Relaxed);
        change.map(|transition| (transition, totals.figures()))
    }

    fn assess(&self, totals: &Totals, margin: u32) -> (Level, Cause) {
        let mut best = (Level::Green, Cause::WithinThresholds);
        let of: u32 = totals.tenants_at.iter().sum();
        if of >= self.thresholds.min_tenants.max(1) {
            let at_least = self.thresholds.share_counts;
            let rising: u32 = totals.tenants_at[at_least as usize..].iter().sum();
            let share_bp = ratio_bp(rising.into(), of.into());
            let level = self.thresholds.share_percent.level(share_bp, margin);
            if level > best.0 {
                best = (
                    level,
                    Cause::TenantsRising {
                        share_bp,
                        at_least,
                        tenants: rising,
                        of,
                    },
                );
            }
        }
        if totals.baseline > 0 {
            let bp = |v: u128| u64::try_from(v * 10_000 / totals.baseline).unwrap_or(u64::MAX);
            let burn = MultiWindow {
                short_bp: bp(totals.burn_short),
                long_bp: bp(totals.burn_long),
            };
            let (level, confirmed) = burn.level(
                &self.thresholds.total_burn_percent_of_baseline,
                self.short_alone_max,
                margin,
            );
            if level > best.0 {
                best = (
                    level,
                    Cause::TotalBurn {
                        short_bp: burn.short_bp,
                        long_bp: burn.long_bp,
                        confirmed,
                    },
                );
            }
        }
        best
    }
}

//! Alert levels: thresholds on lagging and leading signals, the multi-window
//! rule for burn rates, and hysteresis so a level does not flap.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::InvalidSettings;
use super::indicators::Indicators;
use crate::money::NanoUsd;

/// green < yellow < orange < red. Mirrors the WIT `alert-level` enum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum Level {
    /// Spend and forecast are within the budget.
    #[default]
    Green = 0,
    /// Worth watching.
    Yellow = 1,
    /// Act now.
    Orange = 2,
    /// The budget is exhausted or about to be.
    Red = 3,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Green, Level::Yellow, Level::Orange, Level::Red];

    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Green => "green",
            Level::Yellow => "yellow",
            Level::Orange => "orange",
            Level::Red => "red",
        }
    }

    /// The inverse of `level as u8`; out-of-range values saturate to red.
    pub const fn from_u8(value: u8) -> Level {
        match value {
            0 => Level::Green,
            1 => Level::Yellow,
            2 => Level::Orange,
            _ => Level::Red,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a signal turns each level on, in percent (of the budget, or of the
/// baseline for burn rates). A missing step is never reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Steps {
    pub yellow: Option<u32>,
    pub orange: Option<u32>,
    pub red: Option<u32>,
}

impl Steps {
    pub const fn new(yellow: u32, orange: u32, red: u32) -> Self {
        Steps {
            yellow: Some(yellow),
            orange: Some(orange),
            red: Some(red),
        }
    }

    /// The level a signal (in basis points) reaches when every threshold is
    /// lowered by `margin_percent` of itself.
    pub fn level(&self, signal_bp: u64, margin_percent: u32) -> Level {
        let keep = u64::from(100u32.saturating_sub(margin_percent));
        // percent × (100 − margin) is basis points already.
        let reached = |step: Option<u32>| step.is_some_and(|pct| signal_bp >= u64::from(pct) * keep);
        if reached(self.red) {
            Level::Red
        } else if reached(self.orange) {
            Level::Orange
        } else if reached(self.yellow) {
            Level::Yellow
        } else {
            Level::Green
        }
    }

    fn validate(&self, what: &str) -> Result<(), InvalidSettings> {
        let present: Vec<u32> = [self.yellow, self.orange, self.red].into_iter().flatten().collect();
        if present.windows(2).any(|pair| pair[0] > pair[1]) {
            return Err(InvalidSettings(format!(
                "{what}: steps must rise from yellow to orange to red"
            )));
        }
        Ok(())
    }
}

/// How far and how long a signal must fall before its level drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Hysteresis {
    /// A level drops only once its signal is this percent (of the threshold)
    /// below the threshold: orange at 80% spend clears below 72% with 10.
    pub margin_percent: u32,
    /// A level drops no sooner than this long after it was entered.
    pub min_hold_ms: u64,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Hysteresis {
            margin_percent: 10,
            min_hold_ms: 10 * 60_000,
        }
    }
}

/// Per-tenant thresholds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertThresholds {
    /// Lagging: spent ÷ limit.
    pub spend_percent: Steps,
    /// Leading: forecast spend at period end ÷ limit.
    pub forecast_percent: Steps,
    /// Leading: burn rate ÷ the tenant's baseline burn rate.
    pub burn_percent_of_baseline: Steps,
    /// The highest level the short window may raise on its own; above it the
    /// long window must agree (multi-window burn-rate alerting, as in the
    /// Google SRE workbook), so a one-off spike is not a red alert.
    pub short_window_alone_max: Level,
    /// Burn multiples are taken against at least this baseline, so a tenant
    /// whose habit is a few cents a day is not "10x" over one cheap call.
    pub baseline_floor_per_hour: NanoUsd,
    pub hysteresis: Hysteresis,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        AlertThresholds {
            spend_percent: Steps::new(50, 80, 95),
            forecast_percent: Steps {
                yellow: Some(85),
                orange: Some(100),
                red: None,
            },
            burn_percent_of_baseline: Steps::new(300, 600, 1000),
            short_window_alone_max: Level::Yellow,
            baseline_floor_per_hour: NanoUsd::from_cents(1),
            hysteresis: Hysteresis::default(),
        }
    }
}

impl AlertThresholds {
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        self.spend_percent.validate("spend-percent")?;
        self.forecast_percent.validate("forecast-percent")?;
        self.burn_percent_of_baseline.validate("burn-percent-of-baseline")?;
        if self.hysteresis.margin_percent >= 100 {
            return Err(InvalidSettings("hysteresis margin-percent must be below 100".into()));
        }
        Ok(())
    }

    /// The level the signals reach with thresholds lowered by
    /// `margin_percent`, and the signal responsible.
    pub fn assess(&self, signals: &Signals, margin_percent: u32) -> (Level, Cause) {
        let mut best = (Level::Green, Cause::WithinThresholds);
        // Ties go to the first: what was spent beats what is forecast beats
        // how fast, as the more concrete statement.
        let mut consider = |level: Level, cause: Cause| {
            if level > best.0 {
                best = (level, cause);
            }
        };
        if let Some(ratio_bp) = signals.spend_bp {
            consider(
                self.spend_percent.level(ratio_bp, margin_percent),
                Cause::Spend { ratio_bp },
            );
        }
        if let Some(ratio_bp) = signals.forecast_bp {
            consider(
                self.forecast_percent.level(ratio_bp, margin_percent),
                Cause::Forecast { ratio_bp },
            );
        }
        if let (Some(short_bp), Some(long_bp)) = (signals.burn_short_bp, signals.burn_long_bp) {
            let burn = MultiWindow { short_bp, long_bp };
            let (level, confirmed) = burn.level(
                &self.burn_percent_of_baseline,
                self.short_window_alone_max,
                margin_percent,
            );
            let cause = Cause::Burn {
                short_bp,
                long_bp,
                confirmed,
                short_window_minutes: signals.short_window_minutes,
                long_window_minutes: signals.long_window_minutes,
            };
            consider(level, cause);
        }
        best
    }
}

/// A burn rate seen over a short and a long window, as basis points of a
/// baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultiWindow {
    pub short_bp: u64,
    pub long_bp: u64,
}

impl MultiWindow {
    /// Both windows must reach a level; the short one alone reaches at most
    /// `short_alone_max`. Returns the level and whether the long window
    /// confirms it.
    pub fn level(&self, steps: &Steps, short_alone_max: Level, margin_percent: u32) -> (Level, bool) {
        let short = steps.level(self.short_bp, margin_percent);
        let long = steps.level(self.long_bp, margin_percent);
        let level = short.min(long.max(short_alone_max));
        (level, long >= level)
    }
}

/// The signals of one tenant, as basis points (10 000 = 100% or 1x). `None`
/// where there is nothing to compare against (no limit, no baseline yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    pub spend_bp: Option<u64>,
    pub forecast_bp: Option<u64>,
    pub burn_short_bp: Option<u64>,
    pub burn_long_bp: Option<u64>,
    pub short_window_minutes: u32,
    pub long_window_minutes: u32,
}

impl Signals {
    /// A limit of 0 means no budget is set: spend and forecast are then not
    /// judged, only the burn rate.
    pub fn new(spent: NanoUsd, limit: NanoUsd, indicators: &Indicators, baseline_floor: NanoUsd) -> Self {
        let (spend_bp, forecast_bp) = if limit.get() == 0 {
            (None, None)
        } else {
            (
                Some(ratio_bp(spent.get(), limit.get())),
                Some(ratio_bp(indicators.forecast_spend.get(), limit.get())),
            )
        };
        let baseline = indicators.baseline_burn_rate.get();
        let (burn_short_bp, burn_long_bp) = if baseline == 0 {
            (None, None)
        } else {
            let against = baseline.max(baseline_floor.get()).max(1);
            (
                Some(ratio_bp(indicators.burn_rate_short.get(), against)),
                Some(ratio_bp(indicators.burn_rate_long.get(), against)),
            )
        };
        Signals {
            spend_bp,
            forecast_bp,
            burn_short_bp,
            burn_long_bp,
            short_window_minutes: 60,
            long_window_minutes: 1440,
        }
    }

    /// Names the windows in causes ("over 1h and 24h").
    pub fn with_windows(mut self, short_minutes: u32, long_minutes: u32) -> Self {
        self.short_window_minutes = short_minutes;
        self.long_window_minutes = long_minutes;
        self
    }
}

/// `part ÷ whole` in basis points, saturating; `whole` must not be 0.
pub(crate) fn ratio_bp(part: u64, whole: u64) -> u64 {
    let bp = u128::from(part) * 10_000 / u128::from(whole.max(1));
    u64::try_from(bp).unwrap_or(u64::MAX)
}

/// Why a level is what it is. Ratios are basis points: 10 000 = 100% or 1x.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "kebab-case", rename_all_fields = "kebab-case")]
pub enum Cause {
    /// No signal reaches a threshold.
    WithinThresholds,
    /// Spent ÷ limit.
    Spend { ratio_bp: u64 },
    /// Forecast at period end ÷ limit.
    Forecast { ratio_bp: u64 },
    /// Burn rate ÷ baseline over both windows; `confirmed` when the long
    /// window reaches the level too.
    Burn {
        short_bp: u64,
        long_bp: u64,
        confirmed: bool,
        short_window_minutes: u32,
        long_window_minutes: u32,
    },
    /// Aggregate: this share of tracked tenants is at `at_least` or above.
    TenantsRising {
        share_bp: u64,
        at_least: Level,
        tenants: u32,
        of: u32,
    },
    /// Aggregate: total burn ÷ total baseline over both windows.
    TotalBurn {
        short_bp: u64,
        long_bp: u64,
        confirmed: bool,
    },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::WithinThresholds => f.write_str("all signals within thresholds"),
            Cause::Spend { ratio_bp } => write!(f, "spend {}% of budget", ratio_bp / 100),
            Cause::Forecast { ratio_bp } => write!(f, "forecast {}% of budget", ratio_bp / 100),
            Cause::Burn {
                short_bp,
                long_bp,
                confirmed,
                short_window_minutes,
                long_window_minutes,
            } => {
                let (short, long) = (window(*short_window_minutes), window(*long_window_minutes));
                if *confirmed {
                    write!(
                        f,
                        "burn {} baseline over {short} and {long}",
                        Multiple((*short_bp).min(*long_bp))
                    )
                } else {
                    write!(
                        f,
                        "burn {} baseline over {short}, {} over {long}",
                        Multiple(*short_bp),
                        Multiple(*long_bp)
                    )
                }
            }
            Cause::TenantsRising {
                share_bp,
                at_least,
                tenants,
                of,
            } => {
                write!(
                    f,
                    "{tenants} of {of} tenants ({}%) at {at_least} or above",
                    share_bp / 100
                )
            }
            Cause::TotalBurn {
                short_bp,
                long_bp,
                confirmed,
            } => {
                if *confirmed {
                    write!(
                        f,
                        "total burn {} total baseline over both windows",
                        Multiple((*short_bp).min(*long_bp))
                    )
                } else {
                    write!(
                        f,
                        "total burn {} total baseline over the short window",
                        Multiple(*short_bp)
                    )
                }
            }
        }
    }
}

/// A basis-point ratio as a multiple with one decimal: 25 000 → "2.5x".
struct Multiple(u64);

impl fmt::Display for Multiple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, tenth) = (self.0 / 10_000, self.0 % 10_000 / 1_000);
        if tenth == 0 {
            write!(f, "{whole}x")
        } else {
            write!(f, "{whole}.{tenth}x")
        }
    }
}

fn window(minutes: u32) -> String {
    if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// A level change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Level,
    pub to: Level,
    pub cause: Cause,
}

/// The current level of one thing (a tenant, or the aggregate), with the
/// memory hysteresis needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelState {
    level: Level,
    since_ms: u64,
    cause: Cause,
}

impl Default for LevelState {
    fn default() -> Self {
        LevelState {
            level: Level::Green,
            since_ms: 0,
            cause: Cause::WithinThresholds,
        }
    }
}

impl LevelState {
    pub fn level(&self) -> Level {
        self.level
    }

    pub fn cause(&self) -> &Cause {
        &self.cause
    }

    /// Re-evaluates. `assess(margin_percent)` gives the level with thresholds
    /// lowered by that margin. A rise takes effect at once; a fall only after
    /// the hold time and once the signals are below the lowered thresholds.
    /// `fresh_start` (a new budget period) skips both.
    pub fn update(
        &mut self,
        now_ms: u64,
        hysteresis: &Hysteresis,
        fresh_start: bool,
        assess: impl Fn(u32) -> (Level, Cause),
    ) -> Option<Transition> {
        let (raw, cause) = assess(0);
        let (to, cause) = if raw >= self.level || fresh_start {
            (raw, cause)
        } else if now_ms.saturating_sub(self.since_ms) < hysteresis.min_hold_ms {
            return None;
        } else {
            let (held, cause) = assess(hysteresis.margin_percent);
            if held >= self.level {
                return None;
            }
            (held, cause)
        };
        if to == self.level {
            // Same level: refresh the figures the cause quotes.
            self.cause = cause;
            return None;
        }
        let from = self.level;
        *self = LevelState {
            level: to,
            since_ms: now_ms,
            cause: cause.clone(),
        };
        Some(Transition { from, to, cause })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_margin() {
        let steps = Steps::new(50, 80, 95);
        assert_eq!(steps.level(4_999, 0), Level::Green);
        assert_eq!(steps.level(5_000, 0), Level::Yellow);
        assert_eq!(steps.level(8_000, 0), Level::Orange);
        assert_eq!(steps.level(9_500, 0), Level::Red);
        // 10% margin: orange holds down to 72%.
        assert_eq!(steps.level(7_200, 10), Level::Orange);
        assert_eq!(steps.level(7_199, 10), Level::Yellow);
        let none = Steps {
            yellow: Some(10),
            orange: None,
            red: None,
        };
        assert_eq!(none.level(u64::MAX, 0), Level::Yellow);
    }

    #[test]
    fn short_window_alone_is_capped() {
        let steps = Steps::new(300, 600, 1000);
        let spike = MultiWindow {
            short_bp: 200_000,
            long_bp: 15_000,
        };
        assert_eq!(spike.level(&steps, Level::Yellow, 0), (Level::Yellow, false));
        let sustained = MultiWindow {
            short_bp: 120_000,
            long_bp: 110_000,
        };
        assert_eq!(sustained.level(&steps, Level::Yellow, 0), (Level::Red, true));
        // The long window alone raises nothing: the burst is over.
        let over = MultiWindow {
            short_bp: 0,
            long_bp: 110_000,
        };
        assert_eq!(over.level(&steps, Level::Yellow, 0).0, Level::Green);
    }

    #[test]
    fn causes_read_well() {
        assert_eq!(Cause::Spend { ratio_bp: 9_234 }.to_string(), "spend 92% of budget");
        assert_eq!(
            Cause::Forecast { ratio_bp: 14_000 }.to_string(),
            "forecast 140% of budget"
        );
        let burn = Cause::Burn {
            short_bp: 61_000,
            long_bp: 60_000,
            confirmed: true,
            short_window_minutes: 60,
            long_window_minutes: 1440,
        };
        assert_eq!(burn.to_string(), "burn 6x baseline over 1h and 24h");
        let spike = Cause::Burn {
            short_bp: 25_000,
            long_bp: 12_000,
            confirmed: false,
            short_window_minutes: 30,
            long_window_minutes: 1440,
        };
        assert_eq!(spike.to_string(), "burn 2.5x baseline over 30m, 1.2x over 24h");
    }

    #[test]
    fn thresholds_must_rise() {
        assert!(AlertThresholds::default().validate().is_ok());
        let bad = AlertThresholds {
            spend_percent: Steps::new(80, 50, 95),
            ..AlertThresholds::default()
        };
        assert!(bad.validate().is_err());
    }
}

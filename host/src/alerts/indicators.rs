//! Leading indicators: how fast a tenant is spending, against its own habit,
//! and where that leads by the end of the budget period.
//!
//! Each tenant keeps a ring of one-minute buckets covering the long window,
//! with running sums for both windows, so reading the indicators on the
//! request path is O(1) (amortised: buckets are retired as time advances).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use crate::ids::TenantId;
use crate::money::NanoUsd;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// The baseline is kept scaled up so small hourly amounts survive the
/// integer division of the moving average.
const BASELINE_SCALE: u128 = 1 << 20;

use crate::ledger::{SeriesKeep, SpendSeries};

/// Window lengths and the baseline's memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct IndicatorSettings {
    /// The short window: reacts fast, also to noise.
    pub short_window_minutes: u32,
    /// The long window: slow, confirms the short one. Also the history kept.
    pub long_window_minutes: u32,
    /// How many hours the baseline averages over (EWMA with α = 1/hours).
    pub baseline_hours: u32,
    /// Completed hours of history before the baseline is reported (until
    /// then it is 0, meaning "unknown").
    pub baseline_min_hours: u32,
    /// Once warm, an hour counts into the baseline at most at this percent of
    /// the baseline, so a surge does not teach the baseline that surging is
    /// normal before it has been alerted on. A lasting change of habit is
    /// still learned, just over days instead of hours.
    pub baseline_clip_percent: u32,
}

impl Default for IndicatorSettings {
    fn default() -> Self {
        IndicatorSettings {
            short_window_minutes: 60,
            long_window_minutes: 24 * 60,
            baseline_hours: 7 * 24,
            baseline_min_hours: 24,
            baseline_clip_percent: 200,
        }
    }
}

impl IndicatorSettings {
    /// The settings with impossible values replaced by the nearest sane ones,
    /// so arithmetic below never divides by zero.
    fn sane(&self) -> IndicatorSettings {
        let long = self.long_window_minutes.clamp(1, 31 * 24 * 60);
        IndicatorSettings {
            short_window_minutes: self.short_window_minutes.clamp(1, long),
            long_window_minutes: long,
            baseline_hours: self.baseline_hours.max(1),
            baseline_min_hours: self.baseline_min_hours,
            baseline_clip_percent: self.baseline_clip_percent.max(100),
        }
    }
}

/// A tenant's leading indicators, all in nano-dollars (rates per hour).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Indicators {
    /// Spend per hour over the short window.
    pub burn_rate_short: NanoUsd,
    /// Spend per hour over the long window.
    pub burn_rate_long: NanoUsd,
    /// The tenant's usual spend per hour; 0 while the history is too short.
    pub baseline_burn_rate: NanoUsd,
    /// Spent so far plus the long-window burn rate times the time left.
    pub forecast_spend: NanoUsd,
}

/// Per-tenant spend history, shared by all request threads.
#[derive(Debug, Default)]
pub struct SpendHistory {
    settings: IndicatorSettings,
    tenants: RwLock<HashMap<TenantId, Arc<Mutex<TenantHistory>>>>,
}

impl SpendHistory {
    pub fn new(settings: IndicatorSettings) -> Self {
        SpendHistory {
            settings: settings.sane(),
            tenants: RwLock::default(),
        }
    }

    pub fn settings(&self) -> &IndicatorSettings {
        &self.settings
    }

    /// Records money actually spent (settled) by `tenant` at `at_ms`.
    pub fn record_spend(&self, tenant: &TenantId, at_ms: u64, amount: NanoUsd) {
        if amount == NanoUsd::ZERO {
            return;
        }
        let history = self.entry(tenant, at_ms);
        let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
        history.record(&self.settings, at_ms, amount.get());
    }

    /// The indicators as of `now_ms`, for a period that ends at
    /// `period_end_ms` with `spent` spent so far.
    pub fn indicators(&self, tenant: &TenantId, now_ms: u64, spent: NanoUsd, period_end_ms: u64) -> Indicators {
        let existing = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned();
        let Some(history) = existing else {
            return Indicators {
                forecast_spend: spent,
                ..Indicators::default()
            };
        };
        let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
        history.indicators(&self.settings, now_ms, spent, period_end_ms)
    }

    /// How much of a shared series [`replace`](Self::replace) needs: the long
    /// window in minutes, and hours enough for the baseline's average.
    pub fn series_keep(&self) -> SeriesKeep {
        SeriesKeep {
            minutes: u64::from(self.settings.long_window_minutes) + 60,
            hours: u64::from(self.settings.baseline_hours) * 4,
        }
    }

    /// Replaces a tenant's history by one rebuilt from a series that every
    /// replica of a fleet writes, so all of them compute the same
    /// indicators: the hours before the long window feed the baseline, the
    /// minutes the windows.
    pub fn replace(&self, tenant: &TenantId, series: &SpendSeries, now_ms: u64) {
        let window_start = (now_ms / MINUTE_MS).saturating_sub(u64::from(self.settings.long_window_minutes));
        let hours = series
            .hours
            .iter()
            .filter(|(hour, _)| (hour + 1) * 60 <= window_start)
            .map(|&(hour, amount)| (hour * HOUR_MS, amount));
        let minutes = series
            .minutes
            .iter()
            .filter(|(minute, _)| *minute > window_start)
            .map(|&(minute, amount)| (minute * MINUTE_MS, amount));
        let records: Vec<(u64, u64)> = hours.chain(minutes).filter(|(_, amount)| *amount > 0).collect();
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let Some(&(first_ms, _)) = records.first() else {
            tenants.remove(tenant);
            return;
        };
        let mut history = TenantHistory::new(&self.settings, first_ms);
        for (at_ms, amount) in records {
            history.record(&self.settings, at_ms, amount);
        }
        tenants.insert(tenant.clone(), Arc::new(Mutex::new(history)));
    }

    fn entry(&self, tenant: &TenantId, at_ms: u64) -> Arc<Mutex<TenantHistory>> {
        if let Some(found) = self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(tenant) {
            return Arc::clone(found);
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        let entry = tenants
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(Mutex::new(TenantHistory::new(&self.settings, at_ms))));
        Arc::clone(entry)
    }
}

/// One tenant's minute ring and hourly baseline.
#[derive(Debug)]
struct TenantHistory {
    /// Spend per minute; slot `minute % len`. Slots older than the newest
    /// minute by a full ring are zeroed as the ring advances.
    minutes: Box<[u64]>,
    /// The newest minute the ring has advanced to.
    head_minute: u64,
    short_sum: u128,
    long_sum: u128,
    /// When the first spend was seen: a young history's long window is only
    /// as long as the history itself.
    first_ms: u64,
    /// The hour being accumulated for the baseline, and its spend so far.
    hour: u64,
    hour_sum: u128,
    /// EWMA of hourly spend, scaled by `BASELINE_SCALE`.
    baseline_scaled: u128,
    hours_folded: u64,
}

impl TenantHistory {
    fn new(settings: &IndicatorSettings, at_ms: u64) -> Self {
        TenantHistory {
            minutes: vec![0; settings.long_window_minutes as usize].into_boxed_slice(),
            head_minute: at_ms / MINUTE_MS,
            short_sum: 0,
            long_sum: 0,
            first_ms: at_ms,
            hour: at_ms / HOUR_MS,
            hour_sum: 0,
            baseline_scaled: 0,
            hours_folded: 0,
        }
    }

    fn record(&mut self, settings: &IndicatorSettings, at_ms: u64, amount: u64) {
        self.advance(settings, at_ms);
        self.first_ms = self.first_ms.min(at_ms);
        let minute = at_ms / MINUTE_MS;
        let age = self.head_minute.saturating_sub(minute);
        // Late settlements still count if they fall inside the windows.
        if age < u64::from(settings.long_window_minutes) {
            let slot = (minute % self.minutes.len() as u64) as usize;
            self.minutes[slot] = self.minutes[slot].saturating_add(amount);
            self.long_sum += u128::from(amount);
            if age < u64::from(settings.short_window_minutes) {
                self.short_sum += u128::from(amount);
            }
        }
        // A late one for an hour already folded goes into the current hour:
        // the baseline is a long average, the difference does not matter.
        self.hour_sum += u128::from(amount);
    }

    fn indicators(
        &mut self,
        settings: &IndicatorSettings,
        now_ms: u64,
        spent: NanoUsd,
        period_end_ms: u64,
    ) -> Indicators {
        self.advance(settings, now_ms);
        let short_minutes = u128::from(settings.short_window_minutes);
        // A history younger than the long window is averaged over its own age
        // (but at least the short window, so one early call is not an
        // enormous rate).
        let age_minutes = u128::from(now_ms.saturating_sub(self.first_ms) / MINUTE_MS + 1);
        let long_minutes = age_minutes.clamp(short_minutes, u128::from(settings.long_window_minutes));
        let burn_rate_short = saturate(self.short_sum * 60 / short_minutes);
        let burn_rate_long = saturate(self.long_sum * 60 / long_minutes);
        let baseline_burn_rate = if self.hours_folded >= u64::from(settings.baseline_min_hours) {
            saturate(self.baseline_scaled / BASELINE_SCALE)
        } else {
            0
        };
        // The forecast projects the long window, not the short one: over a
        // budget period of days or weeks the last 24 hours (one whole daily
        // cycle of office hours and nights) is the better guess of the rest,
        // and a one-hour burst should not swing the projected month. Bursts
        // are the burn-rate signal's job.
        let left_ms = u128::from(period_end_ms.saturating_sub(now_ms));
        let projected = u128::from(burn_rate_long) * left_ms / u128::from(HOUR_MS);
        let forecast_spend = saturate(u128::from(spent.get()) + projected);
        Indicators {
            burn_rate_short: NanoUsd(burn_rate_short),
            burn_rate_long: NanoUsd(burn_rate_long),
            baseline_burn_rate: NanoUsd(baseline_burn_rate),
            forecast_spend: NanoUsd(forecast_spend),
        }
    }

    /// Moves the ring's head to `now_ms`, retiring minutes that leave each
    /// window, and folds completed hours into the baseline.
    fn advance(&mut self, settings: &IndicatorSettings, now_ms: u64) {
        let now_minute = now_ms / MINUTE_MS;
        if now_minute > self.head_minute {
            let len = self.minutes.len() as u64;
            let short = u64::from(settings.short_window_minutes);
            if now_minute - self.head_minute >= len {
                self.minutes.fill(0);
                self.short_sum = 0;
                self.long_sum = 0;
            } else {
                for minute in self.head_minute + 1..=now_minute {
                    // The minute leaving the short window is still in the ring.
                    if let Some(leaving) = minute.checked_sub(short) {
                        self.short_sum -= u128::from(self.minutes[(leaving % len) as usize]).min(self.short_sum);
                    }
                    // The slot for `minute` holds the minute leaving the long window.
                    let slot = (minute % len) as usize;
                    self.long_sum -= u128::from(self.minutes[slot]).min(self.long_sum);
                    self.minutes[slot] = 0;
                }
            }
            self.head_minute = now_minute;
        }
        let now_hour = now_ms / HOUR_MS;
        if now_hour > self.hour {
            let finished = std::mem::take(&mut self.hour_sum);
            self.fold_hour(settings, finished);
            // Idle hours count as zero spend; after the baseline's whole memory
            // they make no further difference, so the loop is bounded.
            let idle = (now_hour - self.hour - 1).min(u64::from(settings.baseline_hours) * 8);
            for _ in 0..idle {
                self.fold_hour(settings, 0);
            }
            self.hour = now_hour;
        }
    }

    fn fold_hour(&mut self, settings: &IndicatorSettings, amount: u128) {
        let warm = self.hours_folded >= u64::from(settings.baseline_min_hours);
        let mut scaled = amount.saturating_mul(BASELINE_SCALE);
        if warm {
            scaled = scaled.min(self.baseline_scaled * u128::from(settings.baseline_clip_percent) / 100);
        }
        self.hours_folded += 1;
        // While young, a plain running mean (α = 1/n) so early hours are not
        // biased towards zero; then an EWMA with α = 1/baseline_hours.
        let n = u128::from(self.hours_folded.min(u64::from(settings.baseline_hours)));
        let old = self.baseline_scaled;
        self.baseline_scaled = if scaled >= old {
            old + (scaled - old) / n
        } else {
            old - (old - scaled) / n
        };
    }
}

fn saturate(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantId {
        TenantId::new("t").unwrap()
    }

    #[test]
    fn windows_slide_and_forget() {
        let history = SpendHistory::new(IndicatorSettings::default());
        let t = tenant();
        let start = 10 * 24 * HOUR_MS;
        history.record_spend(&t, start, NanoUsd(600));
        let now = start + 30 * MINUTE_MS;
        let i = history.indicators(&t, now, NanoUsd(600), now);
        assert_eq!(i.burn_rate_short, NanoUsd(600));
        // Young history: the long window is only the short window long.
        assert_eq!(i.burn_rate_long, NanoUsd(600));
        let later = start + 2 * HOUR_MS;
        let i = history.indicators(&t, later, NanoUsd(600), later);
        assert_eq!(i.burn_rate_short, NanoUsd(0));
        assert_eq!(i.burn_rate_long, NanoUsd(600 * 60 / 121));
        let gone = start + 25 * HOUR_MS;
        let i = history.indicators(&t, gone, NanoUsd(600), gone);
        assert_eq!(i.burn_rate_long, NanoUsd(0));
    }

    #[test]
    fn baseline_learns_hourly_habit() {
        let history = SpendHistory::new(IndicatorSettings::default());
        let t = tenant();
        for hour in 0..48 {
            history.record_spend(&t, hour * HOUR_MS + 30 * MINUTE_MS, NanoUsd(1_000));
        }
        let i = history.indicators(&t, 48 * HOUR_MS, NanoUsd(48_000), 48 * HOUR_MS + 10 * HOUR_MS);
        assert_eq!(i.baseline_burn_rate, NanoUsd(1_000));
        assert_eq!(i.burn_rate_long, NanoUsd(1_000));
        assert_eq!(i.forecast_spend, NanoUsd(58_000));
    }

    #[test]
    fn a_history_rebuilt_from_the_fleets_series_gives_the_same_indicators() {
        let settings = IndicatorSettings::default();
        let local = SpendHistory::new(settings.clone());
        let t = tenant();
        let mut minutes = std::collections::BTreeMap::new();
        let mut hours = std::collections::BTreeMap::new();
        // Three days of spend, at minute starts, some minutes twice.
        for i in 0..(72 * 60 / 7) {
            let at = 5 * 24 * HOUR_MS + i * 7 * MINUTE_MS;
            let amount = 1_000 + (i * 37) % 500;
            local.record_spend(&t, at, NanoUsd(amount));
            *minutes.entry(at / MINUTE_MS).or_insert(0) += amount;
            *hours.entry(at / HOUR_MS).or_insert(0) += amount;
        }
        let now = 8 * 24 * HOUR_MS + 5 * MINUTE_MS;
        let series = SpendSeries {
            minutes: minutes.into_iter().collect(),
            hours: hours.into_iter().collect(),
        };
        let shared = SpendHistory::new(settings);
        shared.replace(&t, &series, now);
        let end = now + 10 * 24 * HOUR_MS;
        let (a, b) = (
            local.indicators(&t, now, NanoUsd(1), end),
            shared.indicators(&t, now, NanoUsd(1), end),
        );
        assert_eq!(a.burn_rate_short, b.burn_rate_short);
        assert_eq!(a.burn_rate_long, b.burn_rate_long);
        assert_eq!(a.forecast_spend, b.forecast_spend);
        // The baseline, folded from hours instead of minutes, agrees to a rounding.
        let (x, y) = (a.baseline_burn_rate.get(), b.baseline_burn_rate.get());
        assert!(x.abs_diff(y) <= x / 100, "{x} vs {y}");
    }

    #[test]
    fn unknown_tenant_forecasts_what_is_spent() {
        let history = SpendHistory::new(IndicatorSettings::default());
        let i = history.indicators(&tenant(), 5, NanoUsd(7), 1_000_000);
        assert_eq!(
            i,
            Indicators {
                forecast_spend: NanoUsd(7),
                ..Indicators::default()
            }
        );
    }
}

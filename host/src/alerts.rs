//! Alerts: per-tenant alert levels from lagging indicators (spent ÷ limit) and
//! leading ones (burn rate over a short and a long window, against the
//! tenant's own baseline, and the forecast to the end of the period), with
//! hysteresis; an aggregate level across tenants; and delivery of level
//! changes to the event log and to webhooks.
//!
//! ```no_run
//! use tollgate_host::alerts::{AlertSettings, Alerts};
//! use tollgate_host::ids::TenantId;
//! use tollgate_host::money::NanoUsd;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let alerts = Alerts::new(AlertSettings::default())?; // webhooks need a Tokio runtime
//! let tenant = TenantId::new("acme")?;
//! let (now_ms, period_end_ms) = (1_700_000_000_000, 1_702_000_000_000);
//! // When a call settles:
//! alerts.record_spend(&tenant, now_ms, NanoUsd::from_cents(3));
//! // When the next call arrives: indicators and levels for the policy.
//! let a = alerts.assess(&tenant, now_ms, NanoUsd::from_usd(40), NanoUsd::from_usd(100), period_end_ms);
//! println!("{} (all tenants: {}), forecast {}", a.level, a.aggregate, a.indicators.forecast_spend);
//! # Ok(()) }
//! ```
//!
//! Submodules, one concept each: [`indicators`] (spend history, burn rates,
//! baseline, forecast), [`level`] (levels, thresholds, hysteresis),
//! [`aggregate`] (across tenants), [`events`] (the event and its sink),
//! [`webhook`] (HTTP delivery).

pub mod aggregate;
pub mod events;
pub mod indicators;
pub mod level;
#[cfg(feature = "webhooks")]
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

pub use aggregate::{Aggregate, AggregateThresholds, Contribution};
pub use events::{AlertEvent, AlertSubscriber, EventSink, Figures};
pub use indicators::{IndicatorSettings, Indicators, SpendHistory};
pub use level::{AlertThresholds, Cause, Hysteresis, Level, LevelState, Signals, Steps};
#[cfg(feature = "webhooks")]
pub use webhook::{DeliveryReport, Outcome, WebhookError, WebhookNotifier, WebhookStats};

use crate::ids::TenantId;
use crate::money::NanoUsd;

/// Whether this process delivers an event to the webhooks (see
/// [`Alerts::new_gated`]). A gate that cannot decide should say yes: a
/// duplicate alert is better than a lost one.
pub trait DeliveryGate: Send + Sync {
    fn claim(&self, event: &AlertEvent) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;
}

#[cfg(feature = "webhooks")]
struct Gated {
    gate: Arc<dyn DeliveryGate>,
    inner: Arc<WebhookNotifier>,
}

#[cfg(feature = "webhooks")]
impl AlertSubscriber for Gated {
    fn notify(&self, event: &Arc<AlertEvent>) {
        let claim = self.gate.claim(event);
        let (inner, event) = (Arc::clone(&self.inner), Arc::clone(event));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if claim.await {
                        inner.notify(&event);
                    }
                });
            }
            Err(_) => inner.notify(&event),
        }
    }
}

/// Alert configuration, as it appears in the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AlertSettings {
    pub indicators: IndicatorSettings,
    pub thresholds: AlertThresholds,
    pub aggregate: AggregateThresholds,
    pub webhooks: WebhookSettings,
}

impl AlertSettings {
    /// Refuses settings that make no sense (steps out of order, a margin of
    /// 100% or more). Settings that pass nothing here still never panic.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let w = &self.indicators;
        if w.short_window_minutes == 0 || w.short_window_minutes > w.long_window_minutes {
            return Err(InvalidSettings(
                "short-window-minutes must be 1..=long-window-minutes".into(),
            ));
        }
        self.thresholds.validate()?;
        self.aggregate.validate()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid alert settings: {0}")]
pub struct InvalidSettings(pub String);

/// Where alert events are POSTed (delivered with the `webhooks` feature).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebhookSettings {
    /// `http://` or `https://` URLs; each gets every event.
    pub urls: Vec<String>,
    /// Events waiting per URL before new ones are dropped.
    pub queue_capacity: usize,
    /// Attempts per event and URL, the first included.
    pub max_attempts: u32,
    /// The wait before the first retry; doubles each retry.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Per attempt, connecting included.
    pub timeout_ms: u64,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            urls: Vec::new(),
            queue_capacity: 1024,
            max_attempts: 6,
            initial_backoff_ms: 500,
            max_backoff_ms: 60_000,
            timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error(transparent)]
    Settings(#[from] InvalidSettings),
    #[cfg(feature = "webhooks")]
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error("alert webhooks are configured but this build has no `webhooks` feature: enable it or remove the URLs")]
    WebhooksNotBuilt,
}

/// A tenant's indicators and levels as one call on the request path sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub indicators: Indicators,
    pub level: Level,
    pub aggregate: Level,
    /// The tenant's level change, if this call caused one (already published).
    pub event: Option<AlertEvent>,
    /// The aggregate level change, if this call caused one (already published).
    pub aggregate_event: Option<AlertEvent>,
}

/// Alert levels for all tenants. `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct Alerts {
    history: SpendHistory,
    thresholds: AlertThresholds,
    aggregate: Aggregate,
    tenants: RwLock<HashMap<TenantId, Arc<TenantAlert>>>,
    sink: EventSink,
    #[cfg(feature = "webhooks")]
    webhooks: Option<Arc<WebhookNotifier>>,
    seq: AtomicU64,
}

#[derive(Debug, Default)]
struct TenantAlert {
    /// Copy of `state.level` for lock-free reads.
    level: AtomicU8,
    state: Mutex<TenantAlertState>,
}

#[derive(Debug, Default)]
struct TenantAlertState {
    level: LevelState,
    period_end_ms: Option<u64>,
    contribution: Option<Contribution>,
}

impl Alerts {
    /// Validates the settings; configured webhook URLs are refused, as
    /// this build cannot deliver them.
    #[cfg(not(feature = "webhooks"))]
    pub fn new(settings: AlertSettings) -> Result<Self, AlertsError> {
        if !settings.webhooks.urls.is_empty() {
            return Err(AlertsError::WebhooksNotBuilt);
        }
        Self::with_sink(settings, EventSink::new())
    }

    /// Validates the settings and starts webhook delivery if URLs are
    /// configured (that needs a Tokio runtime: call from within one).
    #[cfg(feature = "webhooks")]
    pub fn new(settings: AlertSettings) -> Result<Self, AlertsError> {
        let mut sink = EventSink::new();
        let mut webhooks = None;
        if !settings.webhooks.urls.is_empty() {
            let notifier = Arc::new(WebhookNotifier::start(&settings.webhooks)?);
            sink = sink.with_subscriber(Arc::clone(&notifier) as Arc<dyn AlertSubscriber>);
            webhooks = Some(notifier);
        }
        let mut alerts = Self::with_sink(settings, sink)?;
        alerts.webhooks = webhooks;
        Ok(alerts)
    }

    /// [`new`](Self::new), delivering to the webhooks only the events that
    /// `gate` lets through: a fleet's replicas share one gate, so a level
    /// change each of them sees is sent once.
    #[cfg(feature = "webhooks")]
    pub fn new_gated(settings: AlertSettings, gate: Arc<dyn DeliveryGate>) -> Result<Self, AlertsError> {
        let mut sink = EventSink::new();
        let mut webhooks = None;
        if !settings.webhooks.urls.is_empty() {
            let notifier = Arc::new(WebhookNotifier::start(&settings.webhooks)?);
            sink = sink.with_subscriber(Arc::new(Gated {
                gate,
                inner: Arc::clone(&notifier),
            }));
            webhooks = Some(notifier);
        }
        let mut alerts = Self::with_sink(settings, sink)?;
        alerts.webhooks = webhooks;
        Ok(alerts)
    }

    /// With a sink assembled by the caller; `settings.webhooks` is ignored.
    pub fn with_sink(settings: AlertSettings, sink: EventSink) -> Result<Self, AlertsError> {
        settings.validate()?;
        let t = &settings.thresholds;
        Ok(Alerts {
            history: SpendHistory::new(settings.indicators),
            aggregate: Aggregate::new(settings.aggregate, t.hysteresis, t.short_window_alone_max),
            thresholds: settings.thresholds,
            tenants: RwLock::default(),
            sink,
            #[cfg(feature = "webhooks")]
            webhooks: None,
            seq: AtomicU64::new(1),
        })
    }

    /// Money actually spent (settled) by a tenant.
    pub fn record_spend(&self, tenant: &TenantId, at_ms: u64, amount: NanoUsd) {
        self.history.record_spend(tenant, at_ms, amount);
    }

    /// Replaces a tenant's spend history by the fleet's (see
    /// [`SpendHistory::replace`]); [`series_keep`](Self::series_keep) says how much to fetch.
    pub fn replace_history(&self, tenant: &TenantId, series: &crate::ledger::SpendSeries, now_ms: u64) {
        self.history.replace(tenant, series, now_ms);
    }

    pub fn series_keep(&self) -> crate::ledger::SeriesKeep {
        self.history.series_keep()
    }

    /// The leading indicators alone, without re-evaluating the level.
    pub fn indicators(&self, tenant: &TenantId, now_ms: u64, spent: NanoUsd, period_end_ms: u64) -> Indicators {
        self.history.indicators(tenant, now_ms, spent, period_end_ms)
    }

    /// Re-evaluates a tenant's level and returns its event if it changed.
    pub fn observe(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        spent: NanoUsd,
        limit: NanoUsd,
        period_end_ms: u64,
    ) -> Option<AlertEvent> {
        self.assess(tenant, now_ms, spent, limit, period_end_ms).event
    }

    /// Re-evaluates a tenant's level (and the aggregate), publishes any level
    /// change, and returns everything the tenant's policy is shown. A limit
    /// of 0 means no budget: only the burn rate is judged. A new
    /// `period_end_ms` starts a new period, where hysteresis from the old
    /// one does not hold the level up.
    pub fn assess(
        &self,
        tenant: &TenantId,
        now_ms: u64,
        spent: NanoUsd,
        limit: NanoUsd,
        period_end_ms: u64,
    ) -> Assessment {
        let indicators = self.history.indicators(tenant, now_ms, spent, period_end_ms);
        let windows = self.history.settings();
        let signals = Signals::new(spent, limit, &indicators, self.thresholds.baseline_floor_per_hour)
            .with_windows(windows.short_window_minutes, windows.long_window_minutes);
        let figures = Figures {
            spent,
            limit,
            forecast_spend: indicators.forecast_spend,
            burn_rate_short: indicators.burn_rate_short,
            burn_rate_long: indicators.burn_rate_long,
            baseline_burn_rate: indicators.baseline_burn_rate,
        };
        let entry = self.entry(tenant);
        let (change, aggregate_change, level) = {
            let mut state = entry.state.lock().unwrap_or_else(PoisonError::into_inner);
            let fresh_start = state.period_end_ms.is_some_and(|end| end != period_end_ms);
            state.period_end_ms = Some(period_end_ms);
            let assess = |margin| self.thresholds.assess(&signals, margin);
            let change = state
                .level
                .update(now_ms, &self.thresholds.hysteresis, fresh_start, assess);
            let level = state.level.level();
            entry.level.store(level as u8, Ordering::Relaxed);
            // Under the tenant's lock, so its contributions replace each other in order.
            let contribution = Contribution { level, figures };
            let aggregate_change = self
                .aggregate
                .update(now_ms, state.contribution.as_ref(), &contribution);
            state.contribution = Some(contribution);
            (change, aggregate_change, level)
        };
        let event = change.map(|c| self.publish(Some(tenant.clone()), c, figures, now_ms));
        let aggregate_event = aggregate_change.map(|(c, totals)| self.publish(None, c, totals, now_ms));
        Assessment {
            indicators,
            level,
            aggregate: self.aggregate.level(),
            event,
            aggregate_event,
        }
    }

    /// The tenant's current level (green if never observed): lock-free but
    /// for the map's read lock.
    pub fn level(&self, tenant: &TenantId) -> Level {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants
            .get(tenant)
            .map_or(Level::Green, |t| Level::from_u8(t.level.load(Ordering::Relaxed)))
    }

    /// The level across all tenants: one atomic load.
    pub fn aggregate_level(&self) -> Level {
        self.aggregate.level()
    }

    pub fn sink(&self) -> &EventSink {
        &self.sink
    }

    /// The webhook notifier `new` started, if URLs were configured.
    #[cfg(feature = "webhooks")]
    pub fn webhooks(&self) -> Option<&WebhookNotifier> {
        self.webhooks.as_deref()
    }

    fn publish(&self, tenant: Option<TenantId>, change: level::Transition, figures: Figures, at_ms: u64) -> AlertEvent {
        let event = AlertEvent {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            tenant,
            from: change.from,
            to: change.to,
            message: change.cause.to_string(),
            cause: change.cause,
            figures,
            at_ms,
        };
        self.sink.publish(event.clone());
        event
    }

    fn entry(&self, tenant: &TenantId) -> Arc<TenantAlert> {
        if let Some(found) = self.tenants.read().unwrap_or_else(PoisonError::into_inner).get(tenant) {
            return Arc::clone(found);
        }
        let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(tenants.entry(tenant.clone()).or_default())
    }
}

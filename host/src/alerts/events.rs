//! Level changes as events, and the sink that logs them and fans them out.
//! Publishing never blocks: it runs on the request path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::level::{Cause, Level};
use crate::ids::TenantId;
use crate::money::NanoUsd;

/// The figures a level was judged on. For the aggregate, totals over tenants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Figures {
    pub spent: NanoUsd,
    pub limit: NanoUsd,
    pub forecast_spend: NanoUsd,
    pub burn_rate_short: NanoUsd,
    pub burn_rate_long: NanoUsd,
    pub baseline_burn_rate: NanoUsd,
}

/// A change of alert level. The JSON body of a webhook call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AlertEvent {
    /// Increases by one per event in this process; with `at-ms` it lets a
    /// receiver drop the duplicates a retry can cause.
    pub seq: u64,
    /// The tenant, or `null` for the aggregate level across all tenants.
    pub tenant: Option<TenantId>,
    pub from: Level,
    pub to: Level,
    pub cause: Cause,
    /// The cause in words: "forecast 140% of budget".
    pub message: String,
    pub figures: Figures,
    pub at_ms: u64,
}

impl AlertEvent {
    /// An id stable across retries of the same event.
    pub fn id(&self) -> String {
        format!("{}-{}", self.at_ms, self.seq)
    }
}

/// Something that wants alert events. `notify` is called on the request
/// path: it must return at once (queue, never wait).
pub trait AlertSubscriber: Send + Sync {
    fn notify(&self, event: &Arc<AlertEvent>);
}

/// In-process subscribers (a dashboard, metrics) each get a receiver; a
/// receiver that falls behind loses the oldest events, never the sender.
impl AlertSubscriber for tokio::sync::broadcast::Sender<Arc<AlertEvent>> {
    fn notify(&self, event: &Arc<AlertEvent>) {
        // No receivers is not an error.
        let _ = self.send(Arc::clone(event));
    }
}

/// How many recent events the sink keeps for the admin API.
const RECENT_DEFAULT: usize = 256;

/// Logs every event via `tracing` (the event log), keeps the most recent
/// ones, and hands each to every subscriber.
pub struct EventSink {
    subscribers: Vec<Arc<dyn AlertSubscriber>>,
    recent: Mutex<VecDeque<Arc<AlertEvent>>>,
    recent_capacity: usize,
}

impl Default for EventSink {
    fn default() -> Self {
        EventSink::new()
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("subscribers", &self.subscribers.len())
            .finish_non_exhaustive()
    }
}

impl EventSink {
    /// A sink that only logs (and remembers recent events).
    pub fn new() -> Self {
        EventSink {
            subscribers: Vec::new(),
            recent: Mutex::default(),
            recent_capacity: RECENT_DEFAULT,
        }
    }

    pub fn with_subscriber(mut self, subscriber: Arc<dyn AlertSubscriber>) -> Self {
        self.subscribers.push(subscriber);
        self
    }

    pub fn publish(&self, event: AlertEvent) -> Arc<AlertEvent> {
        log(&event);
        let event = Arc::new(event);
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= self.recent_capacity {
                recent.pop_front();
            }
            recent.push_back(Arc::clone(&event));
        }
        for subscriber in &self.subscribers {
            subscriber.notify(&event);
        }
        event
    }

    /// The most recent events, oldest first.
    pub fn recent(&self) -> Vec<Arc<AlertEvent>> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

fn log(event: &AlertEvent) {
    let tenant = event.tenant.as_ref().map_or("*", TenantId::as_str);
    let f = &event.figures;
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                target: "tollgate::alerts",
                tenant,
                from = %event.from,
                to = %event.to,
                cause = %event.message,
                spent = f.spent.get(),
                limit = f.limit.get(),
                forecast = f.forecast_spend.get(),
                burn_short = f.burn_rate_short.get(),
                burn_long = f.burn_rate_long.get(),
                baseline = f.baseline_burn_rate.get(),
                seq = event.seq,
                "alert level {} -> {}",
                event.from,
                event.to
            )
        };
    }
    if event.to > event.from && event.to >= Level::Orange {
        emit!(warn);
    } else {
        emit!(info);
    }
}

//! Webhook delivery: each event is POSTed as JSON to every configured URL,
//! retried with exponential backoff and jitter.
//!
//! Each URL has its own bounded queue and its own task, so a dead receiver
//! neither delays the others nor reorders its own events, and `notify` (on
//! the request path) only ever `try_send`s: when a queue is full the event is
//! dropped for that URL, counted and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::WebhookSettings;
use super::events::{AlertEvent, AlertSubscriber};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("webhooks need a Tokio runtime to run on")]
    NoRuntime,
    #[error("building the webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// What became of one event at one URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryReport {
    pub url: Arc<str>,
    pub seq: u64,
    pub attempts: u32,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// Out of attempts, or a 4xx that retrying will not fix.
    GaveUp { reason: String },
    /// The URL's queue was full (or shut down): never attempted.
    Dropped,
}

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookStats {
    pub delivered: u64,
    pub gave_up: u64,
    pub dropped: u64,
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    gave_up: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
}

#[derive(Debug)]
struct Target {
    url: Arc<str>,
    queue: mpsc::Sender<Arc<AlertEvent>>,
}

/// Delivers alert events to webhooks in the background.
#[derive(Debug)]
pub struct WebhookNotifier {
    targets: Vec<Target>,
    counters: Arc<Counters>,
    reports: broadcast::Sender<DeliveryReport>,
    stop: watch::Sender<bool>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl WebhookNotifier {
    /// Starts one delivery task per URL on the current Tokio runtime.
    pub fn start(settings: &WebhookSettings) -> Result<Self, WebhookError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
        Self::start_on(settings, &runtime)
    }

    pub fn start_on(settings: &WebhookSettings, runtime: &tokio::runtime::Handle) -> Result<Self, WebhookError> {
        let urls = settings
            .urls
            .iter()
            .map(|url| check_url(url))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let counters = Arc::new(Counters::default());
        let (reports, _) = broadcast::channel(1024);
        let (stop, _) = watch::channel(false);
        let mut targets = Vec::new();
        let mut workers = Vec::new();
        for url in urls {
            let (queue, events) = mpsc::channel(settings.queue_capacity.max(1));
            let worker = Worker {
                url: Arc::clone(&url),
                client: client.clone(),
                settings: settings.clone(),
                counters: Arc::clone(&counters),
                reports: reports.clone(),
            };
            workers.push(runtime.spawn(worker.run(events, stop.subscribe())));
            targets.push(Target { url, queue });
        }
        Ok(WebhookNotifier {
            targets,
            counters,
            reports,
            stop,
            workers: Mutex::new(workers),
        })
    }

    pub fn stats(&self) -> WebhookStats {
        let c = &self.counters;
        WebhookStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            gave_up: c.gave_up.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// Every delivery's outcome, for metrics and tests.
    pub fn reports(&self) -> broadcast::Receiver<DeliveryReport> {
        self.reports.subscribe()
    }

    /// Stops taking events, delivers what is queued (retries included), and
    /// waits for the tasks to end.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for worker in workers {
            let _ = worker.await;
        }
    }
}

impl AlertSubscriber for WebhookNotifier {
    fn notify(&self, event: &Arc<AlertEvent>) {
        for target in &self.targets {
            if target.queue.try_send(Arc::clone(event)).is_err() {
                let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // A stuck receiver could drop thousands: log at powers of two.
                if dropped.is_power_of_two() {
                    tracing::warn!(target: "tollgate::alerts", url = %target.url, seq = event.seq, dropped,
                        "webhook queue full, alert event dropped");
                }
                let report = DeliveryReport {
                    url: Arc::clone(&target.url),
                    seq: event.seq,
                    attempts: 0,
                    outcome: Outcome::Dropped,
                };
                let _ = self.reports.send(report);
            }
        }
    }
}

fn check_url(url: &str) -> Result<Arc<str>, WebhookError> {
    let invalid = |reason: String| WebhookError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("only http and https are supported".into()));
    }
    Ok(Arc::from(url))
}

/// One URL's delivery loop.
struct Worker {
    url: Arc<str>,
    client: reqwest::Client,
    settings: WebhookSettings,
    counters: Arc<Counters>,
    reports: broadcast::Sender<DeliveryReport>,
}

/// Why an attempt failed and whether another one may succeed.
struct Failure {
    reason: String,
    retry: bool,
    retry_after: Option<Duration>,
}

impl Worker {
    async fn run(self, mut events: mpsc::Receiver<Arc<AlertEvent>>, mut stop: watch::Receiver<bool>) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                // On stop, take no more but drain what is queued.
                () = stopped(&mut stop) => { events.close(); events.recv().await }
            };
            let Some(event) = event else { return };
            self.deliver(&event).await;
        }
    }

    async fn deliver(&self, event: &AlertEvent) {
        let body = match serde_json::to_vec(event) {
            Ok(body) => body,
            Err(e) => {
                self.finish(
                    event,
                    0,
                    Outcome::GaveUp {
                        reason: format!("serialising: {e}"),
                    },
                );
                return;
            }
        };
        let max_attempts = self.settings.max_attempts.max(1);
        for attempt in 1..=max_attempts {
            let failure = match self.attempt(event, &body).await {
                Ok(status) => return self.finish(event, attempt, Outcome::Delivered { status }),
                Err(failure) => failure,
            };
            if !failure.retry || attempt == max_attempts {
                return self.finish(event, attempt, Outcome::GaveUp { reason: failure.reason });
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            let delay = self.backoff(attempt, failure.retry_after);
            tracing::debug!(target: "tollgate::alerts", url = %self.url, seq = event.seq, attempt,
                reason = %failure.reason, delay_ms = delay.as_millis() as u64, "webhook attempt failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, event: &AlertEvent, body: &[u8]) -> Result<u16, Failure> {
        let response = self
            .client
            .post(&*self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-tollgate-event-id", event.id())
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Failure {
                reason: error_chain(&e),
                retry: true,
                retry_after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(status.as_u16());
        }
        // Overload and server errors pass; other client errors are ours to fix.
        let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(Failure {
            reason: format!("HTTP {status}"),
            retry,
            retry_after,
        })
    }

    /// The wait before retry `attempt`; see [`crate::backoff`].
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        crate::backoff::delay(
            attempt,
            self.settings.initial_backoff_ms,
            self.settings.max_backoff_ms,
            retry_after,
        )
    }

    fn finish(&self, event: &AlertEvent, attempts: u32, outcome: Outcome) {
        match &outcome {
            Outcome::Delivered { .. } => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "tollgate::alerts", url = %self.url, seq = event.seq, attempts, "webhook delivered");
            }
            Outcome::GaveUp { reason } => {
                self.counters.gave_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "tollgate::alerts", url = %self.url, seq = event.seq, attempts, %reason,
                    "webhook delivery given up");
            }
            Outcome::Dropped => {}
        }
        let report = DeliveryReport {
            url: Arc::clone(&self.url),
            seq: event.seq,
            attempts,
            outcome,
        };
        let _ = self.reports.send(report);
    }
}

/// Resolves once `shutdown` was called or the notifier is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// reqwest's top-level error says little ("error sending request"); the
/// source chain says "connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

//! Webhook delivery to a real HTTP listener on loopback. Tests wait on what
//! the listener receives and on delivery reports, never on the clock; the
//! timeouts below only stop a broken test from hanging.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tollgate_host::alerts::{
    AlertEvent, AlertSettings, AlertSubscriber, Alerts, Cause, DeliveryReport, Figures, Level, Outcome,
    WebhookNotifier, WebhookSettings,
};
use tollgate_host::ids::TenantId;
use tollgate_host::money::NanoUsd;

const PATIENCE: Duration = Duration::from_secs(20);

/// A loopback receiver: answers from a script of statuses (then 200), and
/// reports every request it gets.
struct Receiver {
    statuses: Mutex<VecDeque<u16>>,
    after_script: u16,
    /// When set, each request waits for a permit before it is answered.
    gate: Option<Arc<Semaphore>>,
    seen: mpsc::UnboundedSender<(String, Bytes)>,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("x-tollgate-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let _ = r.seen.send((id, body));
    if let Some(gate) = &r.gate {
        let _permit = gate.acquire().await;
    }
    let status = r.statuses.lock().unwrap().pop_front().unwrap_or(r.after_script);
    StatusCode::from_u16(status).unwrap()
}

async fn receiver(
    statuses: &[u16],
    after_script: u16,
    gate: Option<Arc<Semaphore>>,
) -> (String, mpsc::UnboundedReceiver<(String, Bytes)>) {
    let (seen, requests) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver {
        statuses: Mutex::new(statuses.iter().copied().collect()),
        after_script,
        gate,
        seen,
    });
    let app = Router::new().route("/hook", post(hook)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), requests)
}

/// Short, injected backoff so retries take milliseconds.
fn settings(urls: Vec<String>) -> WebhookSettings {
    WebhookSettings {
        urls,
        queue_capacity: 16,
        max_attempts: 3,
        initial_backoff_ms: 1,
        max_backoff_ms: 5,
        timeout_ms: 5_000,
    }
}

fn event(seq: u64) -> Arc<AlertEvent> {
    Arc::new(AlertEvent {
        seq,
        tenant: Some(TenantId::new("acme").unwrap()),
        from: Level::Yellow,
        to: Level::Orange,
        cause: Cause::Forecast { ratio_bp: 14_000 },
        message: "forecast 140% of budget".into(),
        figures: Figures {
            spent: NanoUsd::from_usd(40),
            limit: NanoUsd::from_usd(100),
            ..Figures::default()
        },
        at_ms: 1_767_225_600_000,
    })
}

async fn next<T: Clone>(reports: &mut broadcast::Receiver<T>) -> T {
    tokio::time::timeout(PATIENCE, reports.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

async fn request(requests: &mut mpsc::UnboundedReceiver<(String, Bytes)>) -> (String, Bytes) {
    tokio::time::timeout(PATIENCE, requests.recv())
        .await
        .expect("timed out")
        .expect("channel closed")
}

#[tokio::test]
async fn level_change_is_posted_as_json() {
    let (url, mut requests) = receiver(&[], 200, None).await;
    let alerts = Alerts::new(AlertSettings {
        webhooks: settings(vec![url]),
        ..AlertSettings::default()
    })
    .unwrap();
    let mut reports = alerts.webhooks().unwrap().reports();
    let tenant = TenantId::new("acme").unwrap();
    let sent = alerts
        .observe(&tenant, 1_000, NanoUsd::from_usd(96), NanoUsd::from_usd(100), 1_000_000)
        .expect("a level change");
    let (id, body) = request(&mut requests).await;
    let received: AlertEvent = serde_json::from_slice(&body).unwrap();
    assert_eq!(received, sent);
    assert_eq!(received.to, Level::Red);
    assert_eq!(id, sent.id());
    let report = next(&mut reports).await;
    assert_eq!(
        (report.seq, report.attempts, report.outcome),
        (sent.seq, 1, Outcome::Delivered { status: 200 })
    );
}

#[tokio::test]
async fn failing_receiver_is_retried_until_it_answers() {
    let (url, mut requests) = receiver(&[500, 503], 200, None).await;
    let notifier = WebhookNotifier::start(&settings(vec![url])).unwrap();
    let mut reports = notifier.reports();
    notifier.notify(&event(7));
    let report: DeliveryReport = next(&mut reports).await;
    assert_eq!(
        (report.attempts, report.outcome),
        (3, Outcome::Delivered { status: 200 })
    );
    // Three requests, all the same event, so the receiver can tell retries apart.
    let ids: Vec<String> = [
        request(&mut requests).await,
        request(&mut requests).await,
        request(&mut requests).await,
    ]
    .into_iter()
    .map(|(id, _)| id)
    .collect();
    assert!(ids.iter().all(|id| *id == event(7).id()), "{ids:?}");
    let stats = notifier.stats();
    assert_eq!((stats.delivered, stats.retries, stats.gave_up), (1, 2, 0));
}

#[tokio::test]
async fn receiver_that_always_fails_is_given_up() {
    let (url, mut requests) = receiver(&[], 500, None).await;
    let notifier = WebhookNotifier::start(&settings(vec![url])).unwrap();
    let mut reports = notifier.reports();
    let started = Instant::now();
    notifier.notify(&event(1));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "notify does not wait for delivery"
    );
    let report = next(&mut reports).await;
    assert_eq!(report.attempts, 3);
    assert!(
        matches!(&report.outcome, Outcome::GaveUp { reason } if reason.contains("500")),
        "{report:?}"
    );
    for _ in 0..3 {
        request(&mut requests).await;
    }
    assert!(requests.try_recv().is_err(), "no fourth attempt");
    assert_eq!(notifier.stats().gave_up, 1);
}

#[tokio::test]
async fn refused_connections_and_client_errors_are_given_up() {
    // A port that was just free: connecting is refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let (bad_request, _requests) = receiver(&[], 400, None).await;
    let notifier = WebhookNotifier::start(&settings(vec![refused.clone(), bad_request])).unwrap();
    let mut reports = notifier.reports();
    notifier.notify(&event(2));
    let mut outcomes = vec![next(&mut reports).await, next(&mut reports).await];
    outcomes.sort_by_key(|r| r.url.to_string() != refused);
    assert_eq!(outcomes[0].attempts, 3, "refused: retried, then given up");
    assert!(
        matches!(&outcomes[0].outcome, Outcome::GaveUp { reason } if reason.contains("refused")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1].attempts, 1, "400: retrying will not help");
    assert!(matches!(&outcomes[1].outcome, Outcome::GaveUp { reason } if reason.contains("400")));
}

#[tokio::test]
async fn a_stuck_receiver_never_blocks_the_request_path() {
    let gate = Arc::new(Semaphore::new(0));
    let (url, mut requests) = receiver(&[], 200, Some(Arc::clone(&gate))).await;
    let notifier = WebhookNotifier::start(&WebhookSettings {
        queue_capacity: 2,
        ..settings(vec![url])
    })
    .unwrap();
    let mut reports = notifier.reports();
    notifier.notify(&event(1));
    // The first event is now in flight, held by the receiver.
    request(&mut requests).await;
    let started = Instant::now();
    for seq in 2..=11 {
        notifier.notify(&event(seq));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "notify never waits: {:?}",
        started.elapsed()
    );
    // Two fit in the queue; the other eight are dropped and counted.
    assert_eq!(notifier.stats().dropped, 8);
    let mut dropped = 0;
    for _ in 0..8 {
        if next(&mut reports).await.outcome == Outcome::Dropped {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 8);
    gate.add_permits(100);
    let mut delivered = Vec::new();
    for _ in 0..3 {
        let report = next(&mut reports).await;
        assert_eq!(report.outcome, Outcome::Delivered { status: 200 });
        delivered.push(report.seq);
    }
    assert_eq!(delivered, [1, 2, 3], "in order, per URL");
    notifier.shutdown().await;
}

#[test]
fn webhooks_need_a_runtime_and_valid_urls() {
    assert!(WebhookNotifier::start(&settings(vec!["http://127.0.0.1:9/".into()])).is_err());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    assert!(WebhookNotifier::start(&settings(vec!["ftp://example.com/".into()])).is_err());
    assert!(WebhookNotifier::start(&settings(vec!["not a url".into()])).is_err());
}

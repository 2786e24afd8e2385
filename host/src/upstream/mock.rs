//! A built-in mock of the Bedrock runtime: the same HTTP API for Converse and
//! ConverseStream, deterministic replies, usage derived from the text,
//! configurable latency, injectable errors and a record of what arrived.
//!
//! It is the default upstream of the demo and of the tests, so nothing needs
//! AWS credentials. It accepts any credentials and any model id.

mod reply;

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use reply::{Counted, Reply, compose_reply};

use super::eventstream::{self, StreamEvent};

/// Bodies above this are refused, as Bedrock refuses oversized requests.
const MAX_BODY_BYTES: usize = 20 * 1024 * 1024;
/// Requests the mock remembers for inspection; older ones are forgotten.
const MAX_RECORDED: usize = 10_000;
/// Words per `contentBlockDelta`, so a reply arrives as several events.
const WORDS_PER_DELTA: usize = 3;

/// How the mock behaves.
#[derive(Clone, Debug, Default)]
pub struct MockSettings {
    /// Delay before the response (Converse) or the first event (ConverseStream).
    pub latency_ms: u64,
    /// Delay between consecutive stream events.
    pub stream_event_interval_ms: u64,
    /// Errors to inject.
    pub faults: Faults,
    /// Seed of the PRNG behind [`Faults::Rate`], so a run can be replayed.
    pub seed: u64,
}

/// One injected outcome of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// HTTP 429 `ThrottlingException`.
    Throttle,
    /// HTTP 500 `InternalServerException`.
    InternalError,
    /// HTTP 503 `ServiceUnavailableException`.
    ServiceUnavailable,
    /// ConverseStream only: some deltas, then a `modelStreamErrorException`
    /// frame. A Converse call that draws it answers normally.
    MidStream,
}

/// Which calls fail, and how.
#[derive(Clone, Debug, Default)]
pub enum Faults {
    /// Every call succeeds.
    #[default]
    None,
    /// Each call draws independently from a seeded PRNG with these
    /// probabilities (0.0–1.0); 5xx calls are split between 500 and 503.
    Rate {
        throttle: f64,
        server_error: f64,
        mid_stream: f64,
    },
    /// The n-th call gets the n-th fault; calls after the end succeed.
    Sequence(Vec<Fault>),
}

/// Which API a request called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Converse,
    ConverseStream,
}

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as sent, still percent-encoded.
    pub path: String,
    /// The model id, percent-decoded (an ARN comes back with its ':' and '/').
    pub model_id: String,
    pub operation: Operation,
    /// All request headers, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The parsed body; `None` when it was not JSON.
    pub body: Option<Value>,
    /// The SHA-256 of the body's bytes, hex: what a SigV4 signature covers.
    pub body_sha256: String,
    /// The fault applied to this call.
    pub fault: Fault,
}

impl RecordedRequest {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `requestMetadata` pairs the caller sent, if any.
    pub fn request_metadata(&self) -> Option<&serde_json::Map<String, Value>> {
        self.body.as_ref()?.get("requestMetadata")?.as_object()
    }
}

/// The mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    #[error("mock Bedrock could not bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// The mock's shared state, independent of any listener: build a router from
/// it to serve the mock yourself (as `tollgate mock-bedrock` does) and keep it
/// to inspect requests or change faults.
#[derive(Clone)]
pub struct MockState {
    inner: Arc<Inner>,
}

struct Inner {
    latency: Duration,
    interval: Duration,
    faults: Mutex<FaultPlan>,
    /// The latest requests, at most [`MAX_RECORDED`]: a long run cannot grow it without bound.
    requests: Mutex<VecDeque<RecordedRequest>>,
    request_counter: AtomicU64,
    /// Prompt prefixes written to the cache, by digest: a later call with
    /// the same prefix reads it. Entries never expire (tests are short).
    cache: Mutex<HashSet<u64>>,
}

struct FaultPlan {
    faults: Faults,
    sequence: VecDeque<Fault>,
    rng: SplitMix64,
    seed: u64,
}

impl FaultPlan {
    fn new(faults: Faults, seed: u64) -> Self {
        let sequence = match &faults {
            Faults::Sequence(s) => s.iter().copied().collect(),
            _ => VecDeque::new(),
        };
        FaultPlan {
            faults,
            sequence,
            rng: SplitMix64(seed),
            seed,
        }
    }

    fn draw(&mut self, operation: Operation) -> Fault {
        let fault = match &self.faults {
            Faults::None => Fault::None,
            Faults::Sequence(_) => self.sequence.pop_front().unwrap_or_default(),
            Faults::Rate {
                throttle,
                server_error,
                mid_stream,
            } => {
                let (throttle, server_error, mid_stream) = (*throttle, *server_error, *mid_stream);
                let bits = self.rng.next();
                // Top 53 bits give a uniform f64 in [0, 1); the low bit picks 500 or 503.
                let r = (bits >> 11) as f64 / (1u64 << 53) as f64;
                if r < throttle {
                    Fault::Throttle
                } else if r < throttle + server_error {
                    if bits & 1 == 0 {
                        Fault::InternalError
                    } else {
                        Fault::ServiceUnavailable
                    }
                } else if r < throttle + server_error + mid_stream {
                    Fault::MidStream
                } else {
                    Fault::None
                }
            }
        };
        // Mid-stream failure only exists for streams.
        if fault == Fault::MidStream && operation == Operation::Converse {
            Fault::None
        } else {
            fault
        }
    }
}

/// A small deterministic PRNG; the mock needs replayable, not secure, randomness.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl MockState {
    pub fn new(settings: MockSettings) -> Self {
        MockState {
            inner: Arc::new(Inner {
                latency: Duration::from_millis(settings.latency_ms),
                interval: Duration::from_millis(settings.stream_event_interval_ms),
                faults: Mutex::new(FaultPlan::new(settings.faults, settings.seed)),
                requests: Mutex::new(VecDeque::new()),
                request_counter: AtomicU64::new(0),
                cache: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// The Bedrock-runtime routes, served from this state.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/model/{model_id}/converse", post(converse))
            .route("/model/{model_id}/converse-stream", post(converse_stream))
            .fallback(unknown_operation)
            .with_state(self.clone())
    }

    /// Every request received so far, oldest first.
    /// The latest requests (at most 10,000), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.requests).iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.requests).clear();
    }

    /// Replaces the fault plan; a sequence starts again from its first entry
    /// and the PRNG from the configured seed.
    pub fn set_faults(&self, faults: Faults) {
        let mut plan = lock(&self.inner.faults);
        let seed = plan.seed;
        *plan = FaultPlan::new(faults, seed);
    }
}

/// A router serving a fresh mock; for a binary that does not need the state.
pub fn router(settings: MockSettings) -> Router {
    MockState::new(settings).router()
}

/// The mock running on a loopback port of the current tokio runtime.
pub struct MockBedrock {
    state: MockState,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockBedrock {
    /// Binds 127.0.0.1 on a free port and serves until `shutdown` or drop.
    pub async fn start(settings: MockSettings) -> Result<MockBedrock, MockError> {
        let bind = "127.0.0.1:0";
        let bind_error = |source| MockError::Bind {
            addr: bind.to_owned(),
            source,
        };
        let listener = TcpListener::bind(bind).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let state = MockState::new(settings);
        let app = state.router();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                // A dropped sender also means stop.
                let _ = stopped.await;
            });
            if let Err(e) = serving.await {
                tracing::warn!(error = %e, "mock Bedrock stopped with an error");
            }
        });
        Ok(MockBedrock {
            state,
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Base URL for an SDK's `endpoint_url`, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &MockState {
        &self.state
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// Stops accepting, lets in-flight calls finish for up to a second, then aborts them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockBedrock {
    fn drop(&mut self) {
        // Dropping the sender ends the graceful-shutdown future; a task still
        // running is aborted so a dropped mock never outlives its test.
        self.stop.take();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the mock down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn converse(
    State(state): State<MockState>,
    model: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Operation::Converse, model, method, uri, headers, body).await
}

async fn converse_stream(
    State(state): State<MockState>,
    model: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Operation::ConverseStream, model, method, uri, headers, body).await
}

async fn unknown_operation(uri: Uri) -> Response {
    bedrock_error(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        &format!("no operation at {}", uri.path()),
    )
}

async fn handle(
    state: MockState,
    operation: Operation,
    model: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let Ok(Path(model_id)) = model else {
        return validation_error("The provided model identifier is not valid.");
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return validation_error("The request body is too large or could not be read."),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let reply = match parsed
        .as_ref()
        .ok_or("Malformed input request: the body is not valid JSON.")
    {
        Ok(body) => compose_reply(&model_id, body),
        Err(message) => Err(message.to_owned()),
    };
    // Only well-formed calls draw a fault, so a sequence lines up with real calls.
    let fault = match reply {
        Ok(_) => lock(&state.inner.faults).draw(operation),
        Err(_) => Fault::None,
    };
    let request = RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        model_id: model_id.clone(),
        operation,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: parsed.clone(),
        body_sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
        fault,
    };
    {
        let mut recorded = lock(&state.inner.requests);
        if recorded.len() == MAX_RECORDED {
            recorded.pop_front();
        }
        recorded.push_back(request);
    }
    let request_number = state.inner.request_counter.fetch_add(1, Ordering::Relaxed);
    let request_id = format!("00000000-0000-4000-8000-{request_number:012x}");

    let reply = match reply {
        Ok(reply) => reply,
        Err(message) => return with_request_id(validation_error(&message), &request_id),
    };

    if !state.inner.latency.is_zero() {
        tokio::time::sleep(state.inner.latency).await;
    }
    let response = match fault {
        Fault::Throttle => bedrock_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        Fault::InternalError => bedrock_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerException",
            "The server encountered an internal error (injected by the mock).",
        ),
        Fault::ServiceUnavailable => bedrock_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableException",
            "The service is temporarily unavailable (injected by the mock).",
        ),
        Fault::None | Fault::MidStream => {
            // Counted once the call runs: a refused call writes nothing to the cache.
            let counted = reply.count(&state.inner.cache);
            match operation {
                Operation::Converse => converse_response(&reply, &counted, started),
                Operation::ConverseStream => {
                    stream_response(reply, counted, started, state.inner.interval, fault == Fault::MidStream)
                }
            }
        }
    };
    with_request_id(response, &request_id)
}

fn converse_response(reply: &Reply, counted: &Counted, started: Instant) -> Response {
    let mut body = json!({
        "output": { "message": { "role": "assistant", "content": [{ "text": reply.text }] } },
        "stopReason": reply.stop_reason,
        "metrics": { "latencyMs": elapsed_ms(started) },
    });
    if let Value::Object(map) = &mut body {
        map.extend(reply.billing_fields(counted));
    }
    json_response(StatusCode::OK, &body)
}

/// Splits the reply into deltas of a few words each, keeping the spaces so
/// the concatenation is exactly the reply text.
fn split_deltas(text: &str) -> Vec<String> {
    let mut deltas = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for piece in text.split_inclusive(' ') {
        current.push_str(piece);
        words += 1;
        if words == WORDS_PER_DELTA {
            deltas.push(std::mem::take(&mut current));
            words = 0;
        }
    }
    if !current.is_empty() {
        deltas.push(current);
    }
    deltas
}

fn stream_response(
    reply: Reply,
    counted: Counted,
    started: Instant,
    interval: Duration,
    fail_mid_stream: bool,
) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let deltas = split_deltas(&reply.text);
        let mut events = vec![StreamEvent::MessageStart {
            role: "assistant".into(),
        }];
        // A failing stream still delivers some text first (at least one delta).
        let delivered = if fail_mid_stream {
            deltas.len().div_ceil(2).max(1).min(deltas.len())
        } else {
            deltas.len()
        };
        events.extend(
            deltas
                .into_iter()
                .take(delivered)
                .map(|text| StreamEvent::ContentBlockDelta {
                    content_block_index: 0,
                    text,
                }),
        );
        if !fail_mid_stream {
            events.push(StreamEvent::ContentBlockStop { content_block_index: 0 });
            events.push(StreamEvent::MessageStop {
                stop_reason: reply.stop_reason.to_owned(),
            });
        }
        for (i, event) in events.iter().enumerate() {
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            if !send_frame(&tx, event.encode()).await {
                return;
            }
        }
        let last = if fail_mid_stream {
            eventstream::encode_exception(
                "modelStreamErrorException",
                "The model stream failed mid-response (injected by the mock).",
            )
        } else {
            StreamEvent::Metadata {
                fields: reply.billing_fields(&counted),
                latency_ms: elapsed_ms(started),
            }
            .encode()
        };
        send_frame(&tx, last).await;
    });
    let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    let mut response = Body::from_stream(frames).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(eventstream::CONTENT_TYPE),
    );
    response
}

/// Sends one frame; false when the client has gone or framing failed, so the
/// producer stops.
async fn send_frame(tx: &mpsc::Sender<Bytes>, frame: Result<Bytes, eventstream::FrameError>) -> bool {
    match frame {
        Ok(frame) => tx.send(frame).await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "mock Bedrock could not frame a stream event");
            false
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn validation_error(message: &str) -> Response {
    bedrock_error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

/// An error shaped as Bedrock sends it, as the gateway sends its own.
fn bedrock_error(status: StatusCode, error_type: &'static str, message: &str) -> Response {
    crate::upstream::error::BedrockError::new(status, error_type, message).into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_concatenate_to_the_reply() {
        let text = "one two three four five six seven";
        let deltas = split_deltas(text);
        assert_eq!(deltas.len(), 3);
        assert_eq!(deltas.concat(), text);
    }

    #[test]
    fn reply_respects_max_tokens() {
        let body = json!({
            "messages": [{ "role": "user", "content": [{ "text": "hello there model" }] }],
            "inferenceConfig": { "maxTokens": 3 },
        });
        let reply = compose_reply("m", &body).unwrap();
        assert_eq!(reply.stop_reason, "max_tokens");
        assert_eq!(reply.output_tokens, 3);
        assert_eq!(reply.text.chars().count(), 12);
        assert_eq!(reply.count(&Mutex::new(HashSet::new())).input, 5);
    }

    #[test]
    fn cache_points_write_once_then_read_and_split_writes_by_ttl() {
        let body = json!({
            "system": [
                { "text": "s".repeat(400) },
                { "cachePoint": { "type": "default", "ttl": "1h" } },
                { "text": "t".repeat(40) },
                { "cachePoint": { "type": "default" } },
            ],
            "messages": [{ "role": "user", "content": [{ "text": "hello there model" }] }],
            "serviceTier": { "type": "priority" },
        });
        let cache = Mutex::new(HashSet::new());
        let reply = compose_reply("m", &body).unwrap();
        let first = reply.count(&cache);
        assert_eq!(
            (first.write_1h, first.write_5m, first.cache_read, first.input),
            (100, 10, 0, 5)
        );
        let fields = reply.billing_fields(&first);
        assert_eq!(fields["usage"]["cacheWriteInputTokens"], 110);
        assert_eq!(
            fields["usage"]["cacheDetails"][1],
            json!({"ttl": "1h", "inputTokens": 100})
        );
        assert_eq!(fields["serviceTier"]["type"], "priority");
        let second = reply.count(&cache);
        assert_eq!(
            (second.write_1h, second.write_5m, second.cache_read, second.input),
            (0, 0, 110, 5)
        );
        // Another model does not share the cache.
        let other = compose_reply("n", &body).unwrap().count(&cache);
        assert_eq!(other.cache_read, 0);
    }

    #[test]
    fn bad_requests_are_refused_without_panicking() {
        for body in [
            json!([1, 2]),
            json!({}),
            json!({ "messages": 3 }),
            json!({ "messages": [], "inferenceConfig": { "maxTokens": -1 } }),
            json!({ "messages": [], "inferenceConfig": { "maxTokens": "ten" } }),
        ] {
            assert!(compose_reply("m", &body).is_err(), "{body}");
        }
        // Odd shapes inside messages are tolerated, as usage only counts text.
        let odd = json!({ "messages": [{ "role": 1, "content": "x" }, 5, { "content": [{ "text": 9 }] }] });
        assert!(compose_reply("m", &odd).is_ok());
    }

    #[test]
    fn rate_faults_are_reproducible_from_the_seed() {
        let faults = Faults::Rate {
            throttle: 0.3,
            server_error: 0.2,
            mid_stream: 0.2,
        };
        let draw = || {
            let mut plan = FaultPlan::new(faults.clone(), 42);
            (0..200)
                .map(|_| plan.draw(Operation::ConverseStream))
                .collect::<Vec<_>>()
        };
        let first = draw();
        assert_eq!(first, draw());
        let throttles = first.iter().filter(|f| **f == Fault::Throttle).count();
        assert!((40..=80).contains(&throttles), "{throttles}");
        assert!(first.contains(&Fault::InternalError) && first.contains(&Fault::ServiceUnavailable));
        assert!(first.contains(&Fault::MidStream) && first.contains(&Fault::None));
    }
}

//! The HTTP face of the gateway, on two listeners: the tenant listener
//! (Bedrock's runtime paths and `/healthz`) and the operator listener (the
//! admin API, `/metrics`, `/readyz`), over HTTPS (rustls) or, where
//! configured, plain HTTP. A thin layer: it reads bodies, authenticates, and
//! maps [`Gateway::call`]'s answer to a response.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{BoxError, Router};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;

use super::admin::{self, AdminToken};
use super::service::{Call, CallBody, Gateway};
use super::trace::operation_name;
use crate::contract::Operation;
use crate::ids::MAX_MODEL_ID_BYTES;
use crate::upstream::error::BedrockError;

pub use super::admin::dashboard::Sessions;
pub use super::listener::{Bound, Edges, Listen, ServeError, install_crypto_provider};
pub use crate::config::DEFAULT_MAX_BODY_BYTES;

/// How the HTTP layer behaves.
#[derive(Clone)]
pub struct ServerSettings {
    pub max_body_bytes: usize,
    /// The longest a model call's body may take to arrive, from its head.
    pub body_read_timeout: Duration,
    /// Model calls in flight at once; one more is shed with a 503.
    pub max_in_flight: usize,
    pub admin_token: Option<AdminToken>,
    /// Where the dashboard's sign-ins are kept: this process's memory by
    /// default, Redis for replicas behind one load balancer.
    pub sessions: Arc<Sessions>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_read_timeout: Duration::from_secs(60),
            max_in_flight: 4096,
            admin_token: None,
            sessions: Arc::default(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) gateway: Gateway,
    pub(crate) settings: Arc<ServerSettings>,
}

/// The tenant listener's routes: Bedrock's model paths and `/healthz`.
/// Nothing about other tenants answers here: the admin API, `/metrics` and
/// `/readyz` are on the operator listener ([`operator_router`]).
pub fn tenant_router(gateway: Gateway, settings: ServerSettings) -> Router {
    let max_in_flight = settings.max_in_flight.max(1);
    let shed_count = gateway.metrics().calls_shed.clone();
    let state = AppState {
        gateway,
        settings: Arc::new(settings),
    };
    // Past the limit a call is refused at once, before its body is read,
    // rather than queued: Bedrock clients retry a 503 with backoff.
    let shed = tower::ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: BoxError| {
            shed_count.inc();
            async move { overloaded(max_in_flight) }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::new(max_in_flight));
    let model_calls = Router::new()
        .route("/model/{model_id}/converse", post(converse))
        .route("/model/{model_id}/converse-stream", post(converse_stream))
        .route_layer(shed)
        .with_state(state);
    Router::new()
        .merge(model_calls)
        .route("/model/{model_id}/{operation}", any(unsupported))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        // The limit is enforced when the body is read, with a Bedrock-shaped error.
        .layer(DefaultBodyLimit::disable())
}

/// The operator listener's routes: the admin API, `/metrics`, `/readyz` and
/// `/healthz`. Bind it where only operators reach (loopback by default).
pub fn operator_router(gateway: Gateway, settings: ServerSettings) -> Router {
    let admin = admin::routes(
        gateway.clone(),
        settings.admin_token.clone(),
        Arc::clone(&settings.sessions),
    );
    let state = AppState {
        gateway,
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(admin)
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
}

async fn converse(
    State(state): State<AppState>,
    model: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Operation::Converse, model, method, uri, headers, body).await
}

async fn converse_stream(
    State(state): State<AppState>,
    model: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(state, Operation::ConverseStream, model, method, uri, headers, body).await
}

async fn handle(
    state: AppState,
    operation: Operation,
    model: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match answer(&state, operation, model, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(Refused::BeforeService(err)) => {
            // The service counts the calls it saw; these it never did.
            state
                .gateway
                .metrics()
                .response(operation_name(operation), err.status.as_u16());
            err.into_response()
        }
        Err(Refused::ByService(err)) => err.into_response(),
    }
}

/// An error answer, by who produced it.
enum Refused {
    BeforeService(BedrockError),
    ByService(BedrockError),
}

async fn answer(
    state: &AppState,
    operation: Operation,
    model: Result<Path<String>, PathRejection>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Refused> {
    let Ok(Path(model_id)) = model else {
        return Err(Refused::BeforeService(BedrockError::validation(
            "The provided model identifier is not valid: it must be percent-encoded UTF-8 in the path",
        )));
    };
    if model_id.is_empty() || model_id.len() > MAX_MODEL_ID_BYTES {
        return Err(Refused::BeforeService(BedrockError::validation(format!(
            "The provided model identifier is not valid: it must be 1 to {MAX_MODEL_ID_BYTES} bytes, as Bedrock \
             requires"
        ))));
    }
    // A caller the headers already refuse does not get its body read.
    state.gateway.precheck(headers, uri).map_err(Refused::BeforeService)?;
    let limit = state.settings.max_body_bytes;
    let timeout = state.settings.body_read_timeout;
    let body = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return Err(Refused::BeforeService(BedrockError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "ValidationException",
                format!(
                    "The request body is larger than this gateway's limit of {limit} bytes (or could not be read); \
                     send smaller images or documents, or raise [server] max-body-bytes"
                ),
            )));
        }
        Err(_) => {
            // Nothing was decided, reserved or sent: the call simply did not arrive in time.
            return Err(Refused::BeforeService(BedrockError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeoutException",
                format!(
                    "The request body did not arrive within {} ms of its headers; send it faster, or raise \
                     [server] body-read-timeout-ms",
                    timeout.as_millis()
                ),
            )));
        }
    };
    let tenant = state
        .gateway
        .authenticate(headers, method, uri, &body)
        .map_err(Refused::BeforeService)?;
    let response = state
        .gateway
        .call(
            &tenant,
            Call {
                operation,
                model_id,
                body,
            },
        )
        .await
        .map_err(Refused::ByService)?;
    let out = response.into_http(operation, |body| match body {
        CallBody::Full(bytes) => Body::from(bytes),
        CallBody::Stream(frames) => Body::from_stream(frames),
    });
    Ok(out)
}

fn overloaded(max_in_flight: usize) -> Response {
    BedrockError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
        format!(
            "tollgate has {max_in_flight} calls in flight, its limit; retry with backoff, or raise [server] \
             max-in-flight"
        ),
    )
    .into_response()
}

async fn unsupported(uri: Uri) -> Response {
    BedrockError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!(
            "tollgate serves Converse and ConverseStream (POST /model/{{modelId}}/converse and /converse-stream); {} \
             is not one of them",
            uri.path()
        ),
    )
    .into_response()
}

async fn not_found(uri: Uri) -> Response {
    BedrockError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!("no operation at {}", uri.path()),
    )
    .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `?wait-ms=N` on `/readyz`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ReadyQuery {
    wait_ms: Option<u64>,
}

/// The longest `/readyz?wait-ms` waits.
const READY_WAIT_MAX_MS: u64 = 30_000;

/// Ready when every configured tenant has an active policy and a budget,
/// the ledger accepts writes, and the upstream answers. A tenant created at
/// runtime and not given a policy yet makes no gateway unready. With
/// `?wait-ms=N` (at most 30 000) it answers as soon as everything is
/// healthy, or after N ms with the state then: for scripts that restart a
/// dependency and wait for the gateway to follow.
async fn readyz(State(state): State<AppState>, Query(query): Query<ReadyQuery>) -> Response {
    let wait = query.wait_ms.unwrap_or(0).min(READY_WAIT_MAX_MS);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
    let signal = state.gateway.accounting().ledger().store().health_signal();
    loop {
        // Registered before the check, so a change in between is not missed.
        let changed = signal.map(|s| s.notified());
        tokio::pin!(changed);
        if let Some(changed) = changed.as_mut().as_pin_mut() {
            changed.enable();
        }
        let (problems, notes) = readiness(&state).await;
        let healthy = problems.is_empty() && notes.is_empty();
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if healthy || remaining.is_zero() || signal.is_none() {
            return ready_response(problems, notes);
        }
        if let Some(changed) = changed.as_pin_mut() {
            let _ = tokio::time::timeout(remaining, changed).await;
        }
    }
}

/// What keeps the gateway from being ready, and what degrades it.
async fn readiness(state: &AppState) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    for tenant in &state.gateway.tenants() {
        let configured = state
            .gateway
            .directory()
            .record(tenant)
            .is_some_and(|r| r.seed.is_some());
        if configured && state.gateway.registry().active(tenant).is_none() {
            problems.push(format!("tenant {tenant} has no active policy"));
        }
        if state.gateway.accounting().ledger().limits(tenant).is_none() {
            problems.push(format!("tenant {tenant} has no budget"));
        }
    }
    let store = state.gateway.accounting().ledger().store();
    let mut notes = Vec::new();
    if let Err(e) = store.health() {
        if store.fails_open() {
            // Still serving, on the local allowance: the balancer keeps it, the operator sees why.
            notes.push(format!(
                "degraded: {e}; calls are admitted on each tenant's local allowance"
            ));
        } else {
            problems.push(format!(
                "the ledger does not accept writes ({e}); no call can be charged"
            ));
        }
    }
    if let Err(e) = state.gateway.upstream().probe().await {
        problems.push(format!(
            "the upstream {} does not answer ({e})",
            state.gateway.upstream().endpoint()
        ));
    }
    (problems, notes)
}

fn ready_response(mut problems: Vec<String>, notes: Vec<String>) -> Response {
    if problems.is_empty() {
        let text = if notes.is_empty() {
            "ready\n".to_owned()
        } else {
            format!("ready ({})\n", notes.join("; "))
        };
        (StatusCode::OK, text).into_response()
    } else {
        problems.sort();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.gateway.metrics().encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

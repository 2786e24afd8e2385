//! The HTTP face of the gateway: Bedrock's runtime paths, health, metrics and
//! the admin API, over HTTPS (rustls) or, where configured, plain HTTP. A thin
//! layer: it reads bodies, authenticates, and maps [`Gateway::call`]'s answer
//! to a response.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};

use super::admin::{self, AdminToken};
use super::service::{Call, CallBody, Gateway};
use super::trace::operation_name;
use crate::contract::Operation;
use crate::upstream::error::BedrockError;

pub use crate::config::DEFAULT_MAX_BODY_BYTES;

/// How the HTTP layer behaves.
#[derive(Clone)]
pub struct ServerSettings {
    pub max_body_bytes: usize,
    pub admin_token: Option<AdminToken>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            admin_token: None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) gateway: Gateway,
    pub(crate) settings: Arc<ServerSettings>,
}

/// The gateway's routes.
pub fn router(gateway: Gateway, settings: ServerSettings) -> Router {
    let admin = admin::routes(gateway.clone(), settings.admin_token.clone());
    let state = AppState {
        gateway,
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/model/{model_id}/converse", post(converse))
        .route("/model/{model_id}/converse-stream", post(converse_stream))
        .route("/model/{model_id}/{operation}", any(unsupported))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(admin)
        .fallback(not_found)
        // The limit is enforced when the body is read, with a Bedrock-shaped error.
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
    // A caller the headers already refuse does not get its body read.
    state.gateway.precheck(headers, uri).map_err(Refused::BeforeService)?;
    let limit = state.settings.max_body_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        Refused::BeforeService(BedrockError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationException",
            format!(
                "The request body is larger than this gateway's limit of {limit} bytes (or could not be read); send \
                 smaller images or documents, or raise [server] max-body-bytes"
            ),
        ))
    })?;
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

/// Ready when every configured tenant has an active policy and a budget.
async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    for (tenant, _) in state.gateway.tenants() {
        if state.gateway.registry().active(tenant).is_none() {
            problems.push(format!("tenant {tenant} has no active policy"));
        }
        if state.gateway.accounting().ledger().limits(tenant).is_none() {
            problems.push(format!("tenant {tenant} has no budget"));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
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

/// Where the gateway listens and how.
#[derive(Debug, Clone)]
pub enum Listen {
    /// HTTPS with a certificate chain and key in PEM files.
    Https {
        addr: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
    },
    /// Plain HTTP: only where configured (loopback, or behind a TLS proxy).
    Http { addr: SocketAddr },
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}. Is another process using the port?")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot load the TLS certificate {cert} / key {key}: {detail}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener, ready to serve.
pub struct Bound {
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
}

impl Bound {
    /// Binds the address (port 0 picks one) and loads the certificate, so
    /// errors surface before the gateway reports itself started.
    pub async fn bind(listen: &Listen) -> Result<Bound, ServeError> {
        let addr = match listen {
            Listen::Https { addr, .. } | Listen::Http { addr } => *addr,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
        listener.set_nonblocking(true)?;
        let tls = match listen {
            Listen::Http { .. } => None,
            Listen::Https { cert, key, .. } => {
                install_crypto_provider();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|e| ServeError::Tls {
                        cert: cert.clone(),
                        key: key.clone(),
                        detail: e.to_string(),
                    })?;
                Some(config)
            }
        };
        Ok(Bound { listener, tls })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.listener.local_addr()?)
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until `shutdown` resolves, then lets calls in flight finish
    /// (up to `grace`).
    pub async fn serve(
        self,
        app: Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<(), ServeError> {
        let handle = axum_server::Handle::new();
        let trigger = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.graceful_shutdown(Some(grace));
        });
        let service = app.into_make_service();
        match self.tls {
            Some(tls) => {
                axum_server::from_tcp_rustls(self.listener, tls)
                    .handle(handle)
                    .serve(service)
                    .await?
            }
            None => {
                axum_server::from_tcp(self.listener)
                    .handle(handle)
                    .serve(service)
                    .await?
            }
        }
        Ok(())
    }
}

/// rustls needs one process-wide crypto provider; ring builds everywhere.
pub fn install_crypto_provider() {
    // An error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

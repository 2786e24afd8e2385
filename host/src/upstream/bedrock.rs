//! The client that forwards calls to Bedrock (or to a Bedrock-compatible
//! endpoint such as the built-in mock).
//!
//! Why raw HTTP and not the typed `aws-sdk-bedrockruntime` client: the typed
//! model drops every JSON field it does not know, so fields Bedrock adds to
//! the API later would silently vanish on the way through. Here the caller's
//! body is forwarded as JSON with only tollgate's edits, and the response
//! bytes (JSON or event stream) come back untouched. What the SDK does besides
//! is kept: the standard credential chain and region from `aws-config`,
//! SigV4 from `aws-sigv4`, retries with backoff on throttling and 5xx, and
//! timeouts for connecting, for a whole Converse call and for a silent stream.
//!
//! The HTTP client is hyper's pooled client with rustls, used directly: the
//! request is built once as an `http::Request`, signed in place and sent, with
//! no conversion into another client's types on every call.
//!
//! A retry only happens before any byte has reached the caller: for a stream,
//! once the upstream answered 200 the stream is the caller's.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::sigv4::Signer;
pub use crate::config::upstream::{UpstreamAuthKind, UpstreamSettings};
use crate::contract::Operation;

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";

/// Characters escaped in the model path segment, as the AWS SDKs do (`:` and
/// `/` of ARNs included).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The longest Converse answer read into memory. Bedrock's are far shorter
/// (a reply is bounded by its output tokens); past this the exchange counts
/// as broken, and the call as one that may have run.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Credentials are refreshed this long before they expire.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Why the upstream could not be set up or reached.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "no AWS region for Bedrock: set [upstream] region in tollgate.toml, or AWS_REGION, or a region in the AWS \
         profile"
    )]
    NoRegion,
    #[error("[upstream] endpoint {0:?} is not an http:// or https:// URL")]
    BadEndpoint(String),
    #[error(
        "[upstream] auth = \"bearer\" needs a Bedrock API key in the AWS_BEARER_TOKEN_BEDROCK environment variable"
    )]
    NoBearerToken,
    #[error("cannot build the HTTP client for Bedrock: {0}")]
    Client(String),
    #[error(
        "cannot read the CA bundle {path}: {detail}. [upstream.bedrock] ca-bundle (or AWS_CA_BUNDLE) must name a \
         file of PEM certificates"
    )]
    CaBundle { path: String, detail: String },
    #[error(
        "no AWS credentials for Bedrock: {0}. Configure the standard AWS credential chain (environment, profile, SSO, web identity, container or instance role)"
    )]
    Credentials(String),
    #[error("cannot sign the request to Bedrock: {0}")]
    Signing(String),
    #[error("Bedrock did not answer within {0} ms")]
    Timeout(u64),
    /// The connection could not be made: the request was never sent.
    #[error("cannot reach Bedrock at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    /// The exchange broke after the request may have been sent.
    #[error("the connection to Bedrock at {endpoint} broke: {detail}")]
    Broken { endpoint: String, detail: String },
}

impl UpstreamError {
    /// Whether Bedrock may have run (and billed) the call: the request was
    /// sent and no answer says otherwise. Such a call is charged, never
    /// released, and not retried.
    pub fn may_have_run(&self) -> bool {
        matches!(self, UpstreamError::Timeout(_) | UpstreamError::Broken { .. })
    }
}

/// Whether an error status proves that Bedrock did not run the call, so its
/// hold may be released: a refusal of the request itself (4xx, but not a
/// request timeout or a model error) or a documented unbilled 503. Other
/// 5xx answers come after the call reached the model and may be billed.
pub fn status_proves_not_run(status: StatusCode) -> bool {
    match status.as_u16() {
        408 | 424 => false,
        400..=499 | 503 => true,
        _ => false,
    }
}

/// The upstream's answer. For a stream with status 200, `body` is still open.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: UpstreamBody,
    /// Attempts made, the first included.
    pub attempts: u32,
}

pub enum UpstreamBody {
    Full(Bytes),
    Stream(UpstreamStream),
}

/// The open body of a stream that Bedrock answered with 200.
pub struct UpstreamStream(hyper::body::Incoming);

impl UpstreamStream {
    /// The next bytes of the body, `None` at its end, or why the connection broke.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self.0.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                    // Trailers carry nothing a caller needs; read on.
                }
                Err(e) => return Some(Err(error_chain(&e))),
            }
        }
    }
}

/// hyper's pooled client over TCP, with rustls for `https://` endpoints.
type HttpClient = Client<ConnectWithin, Full<Bytes>>;

/// The connector under a time limit that covers the TLS handshake too, so a
/// handshake that stalls counts as a connection that could not be made (the
/// call is released and retried), not as a call that may have run.
#[derive(Clone)]
struct ConnectWithin {
    inner: HttpsConnector<HttpConnector>,
    limit: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for ConnectWithin {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, limit) = (self.inner.call(uri), self.limit);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(format!("no connection within {} ms", limit.as_millis()).into()),
            }
        })
    }
}

enum Auth {
    None,
    Bearer(HeaderValue),
    Sigv4 {
        signer: Signer,
        credentials: CredentialsCache,
    },
}

/// A Bedrock runtime endpoint. Cheap to share: clone the `Arc` it lives in.
pub struct Upstream {
    http: HttpClient,
    endpoint: String,
    auth: Auth,
    settings: UpstreamSettings,
    /// The region calls are sent to, and so priced in.
    region: Option<String>,
    /// When the last reachability probe succeeded.
    probed: Mutex<Option<Instant>>,
}

/// How long a probe's answer is reused: readiness checks come every few
/// seconds from each load balancer, and Bedrock need not see them all.
const PROBE_REUSE: Duration = Duration::from_secs(5);

impl Upstream {
    /// An unauthenticated endpoint, e.g. the built-in mock at `url`.
    pub fn unsigned(url: &str, settings: UpstreamSettings) -> Result<Upstream, UpstreamError> {
        Ok(Upstream {
            http: http_client(&settings)?,
            endpoint: endpoint(url)?,
            auth: Auth::None,
            region: settings.region.clone(),
            settings,
            probed: Mutex::new(None),
        })
    }

    /// Real Bedrock: region and credentials from the standard AWS chain unless
    /// the settings name them.
    pub async fn bedrock(settings: UpstreamSettings) -> Result<Upstream, UpstreamError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        );
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let mut settings = settings;
        if settings.ca_bundle.is_none() {
            settings.ca_bundle = std::env::var_os("AWS_CA_BUNDLE")
                .filter(|v| !v.is_empty())
                .map(Into::into);
        }
        let region = sdk.region().map(|r| r.to_string()).ok_or(UpstreamError::NoRegion)?;
        let url = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
        let auth = match settings.auth {
            UpstreamAuthKind::None => Auth::None,
            UpstreamAuthKind::Bearer => {
                let token = std::env::var("AWS_BEARER_TOKEN_BEDROCK").map_err(|_| UpstreamError::NoBearerToken)?;
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| UpstreamError::NoBearerToken)?;
                value.set_sensitive(true);
                Auth::Bearer(value)
            }
            UpstreamAuthKind::Sigv4 => {
                let provider = sdk
                    .credentials_provider()
                    .ok_or_else(|| UpstreamError::Credentials("the AWS config chain has no provider".into()))?;
                Auth::Sigv4 {
                    signer: Signer::new(&region, SERVICE),
                    credentials: CredentialsCache::new(provider),
                }
            }
        };
        Ok(Upstream {
            http: http_client(&settings)?,
            endpoint: endpoint(&url)?,
            auth,
            settings,
            region: Some(region),
            probed: Mutex::new(None),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether the endpoint answers HTTP at all (any status will do: an
    /// unsigned request is refused, which proves DNS, TCP and TLS work).
    /// A success is reused for a few seconds; a failure is probed again
    /// next time, so recovery shows at once.
    pub async fn probe(&self) -> Result<(), String> {
        if let Some(at) = *self.probed.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < PROBE_REUSE
        {
            return Ok(());
        }
        let timeout = Duration::from_millis(self.settings.connect_timeout_ms.saturating_add(2_000));
        let request = Request::get(self.endpoint.as_str())
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        let answered = match tokio::time::timeout(timeout, self.http.request(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        let mut probed = self.probed.lock().unwrap_or_else(|p| p.into_inner());
        *probed = answered.is_ok().then(Instant::now);
        answered
    }

    /// The region calls go to, when known (the mock names none).
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// Sends one call, retrying with backoff only what Bedrock provably did
    /// not run: throttling (429), 503 and connections that could not be made.
    /// A timeout or a broken exchange after the send is not retried: the
    /// call may have run. Error statuses come back as a response.
    pub async fn send(
        &self,
        operation: Operation,
        model_id: &str,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let path_op = match operation {
            Operation::Converse => "converse",
            Operation::ConverseStream => "converse-stream",
        };
        let url = format!(
            "{}/model/{}/{path_op}",
            self.endpoint,
            utf8_percent_encode(model_id, PATH_SEGMENT)
        );
        // Parsed once for every attempt.
        let uri = Uri::try_from(url.as_str()).map_err(|e| UpstreamError::Signing(format!("{url}: {e}")))?;
        let attempts = self.settings.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            match self.send_once(operation, &uri, body.clone()).await {
                Ok(mut response) => {
                    if !last && retryable_status(response.status) {
                        tokio::time::sleep(self.backoff(attempt, retry_after(&response.headers))).await;
                        continue;
                    }
                    response.attempts = attempt;
                    return Ok(response);
                }
                Err(err @ UpstreamError::Unreachable { .. }) if !last => {
                    tracing::debug!(error = %err, attempt, "retrying the upstream call");
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn send_once(&self, operation: Operation, uri: &Uri, body: Bytes) -> Result<UpstreamResponse, UpstreamError> {
        let mut request = Request::post(uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, accept(operation))
            .body(Full::new(body.clone()))
            .map_err(|e| UpstreamError::Signing(e.to_string()))?;
        match &self.auth {
            Auth::None => {}
            Auth::Bearer(value) => {
                request.headers_mut().insert(header::AUTHORIZATION, value.clone());
            }
            Auth::Sigv4 { signer, credentials } => {
                let identity = credentials.get().await?;
                signer
                    .sign(&mut request, &body, &identity, SystemTime::now())
                    .map_err(UpstreamError::Signing)?;
            }
        }
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| UpstreamError::Timeout(self.settings.timeout_ms))?
            .map_err(|e| {
                let (endpoint, detail) = (self.endpoint.clone(), error_chain(&e));
                // Only a connection that was never made proves the request unsent.
                if e.is_connect() {
                    UpstreamError::Unreachable { endpoint, detail }
                } else {
                    UpstreamError::Broken { endpoint, detail }
                }
            })?;
        let (parts, body) = response.into_parts();
        if operation == Operation::ConverseStream && parts.status.is_success() {
            return Ok(UpstreamResponse {
                status: parts.status,
                headers: parts.headers,
                body: UpstreamBody::Stream(UpstreamStream(body)),
                attempts: 1,
            });
        }
        let bytes = tokio::time::timeout(timeout, Limited::new(body, MAX_RESPONSE_BYTES).collect())
            .await
            .map_err(|_| UpstreamError::Timeout(self.settings.timeout_ms))?
            .map_err(|e| UpstreamError::Broken {
                endpoint: self.endpoint.clone(),
                detail: if e.is::<LengthLimitError>() {
                    format!("the answer was longer than {MAX_RESPONSE_BYTES} bytes")
                } else {
                    error_chain(&*e)
                },
            })?
            .to_bytes();
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body: UpstreamBody::Full(bytes),
            attempts: 1,
        })
    }

    /// The silence after which a stream is cut.
    pub fn stream_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.stream_idle_timeout_ms)
    }

    /// The longest a stream may run before it is cut.
    pub fn stream_max(&self) -> Duration {
        Duration::from_millis(self.settings.stream_max_ms)
    }

    /// How long a stream whose caller left is read on.
    pub fn stream_drain(&self) -> Duration {
        Duration::from_millis(self.settings.stream_drain_ms)
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
}

fn http_client(settings: &UpstreamSettings) -> Result<HttpClient, UpstreamError> {
    let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::Client(e.to_string()))?
        .with_root_certificates(trusted_roots(settings.ca_bundle.as_deref())?)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(ConnectWithin {
            inner: https,
            limit: connect_timeout,
        }))
}

/// The public web roots, plus the certificates of `ca_bundle` when set.
fn trusted_roots(ca_bundle: Option<&std::path::Path>) -> Result<rustls::RootCertStore, UpstreamError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let Some(path) = ca_bundle else {
        return Ok(roots);
    };
    let bad = |detail: String| UpstreamError::CaBundle {
        path: path.display().to_string(),
        detail,
    };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("it holds no certificate".into()));
    }
    Ok(roots)
}

fn endpoint(url: &str) -> Result<String, UpstreamError> {
    let trimmed = url.trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.len() <= "https://".len() {
        return Err(UpstreamError::BadEndpoint(url.to_owned()));
    }
    Ok(trimmed.to_owned())
}

fn accept(operation: Operation) -> &'static str {
    match operation {
        Operation::Converse => "application/json",
        Operation::ConverseStream => "application/vnd.amazon.eventstream",
    }
}

/// Refusals Bedrock documents as unbilled are worth another attempt.
fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Credentials from the chain, kept until shortly before they expire, so the
/// request path does not call the chain (IMDS, STS, SSO) every time. They
/// are kept as the signer's `Identity`, so a call clones an `Arc` rather
/// than converting them again.
struct CredentialsCache {
    provider: SharedCredentialsProvider,
    current: ArcSwapOption<(Identity, Option<SystemTime>)>,
    refresh: tokio::sync::Mutex<()>,
}

impl CredentialsCache {
    fn new(provider: SharedCredentialsProvider) -> Self {
        CredentialsCache {
            provider,
            current: ArcSwapOption::empty(),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    async fn get(&self) -> Result<Identity, UpstreamError> {
        if let Some(identity) = self.fresh() {
            return Ok(identity);
        }
        let _one_refresh = self.refresh.lock().await;
        if let Some(identity) = self.fresh() {
            return Ok(identity);
        }
        let creds = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| UpstreamError::Credentials(error_chain(&e)))?;
        let expiry = creds.expiry();
        let identity = Identity::from(creds);
        self.current.store(Some(Arc::new((identity.clone(), expiry))));
        Ok(identity)
    }

    fn fresh(&self) -> Option<Identity> {
        let current = self.current.load();
        let (identity, expiry) = current.as_deref()?;
        match expiry {
            Some(expiry) if *expiry <= SystemTime::now() + CREDENTIALS_REFRESH_MARGIN => None,
            _ => Some(identity.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_are_escaped_in_the_path() {
        let arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123";
        let escaped = utf8_percent_encode(arn, PATH_SEGMENT).to_string();
        assert_eq!(
            escaped,
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fabc123"
        );
        assert_eq!(
            utf8_percent_encode("anthropic.claude-3-haiku-20240307-v1:0", PATH_SEGMENT).to_string(),
            "anthropic.claude-3-haiku-20240307-v1%3A0"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let upstream = Upstream::unsigned(
            "http://127.0.0.1:1",
            UpstreamSettings {
                initial_backoff_ms: 100,
                max_backoff_ms: 400,
                ..UpstreamSettings::default()
            },
        )
        .expect("client");
        for attempt in 1..10 {
            assert!(upstream.backoff(attempt, None) <= Duration::from_millis(400));
        }
        // Retry-After is honoured up to the cap.
        assert!(upstream.backoff(1, Some(Duration::from_secs(1))) >= Duration::from_millis(400));
    }

    #[test]
    fn endpoints_must_be_urls() {
        assert!(endpoint("bedrock.example").is_err());
        assert!(endpoint("https://").is_err());
        assert_eq!(endpoint("http://127.0.0.1:9000/").expect("ok"), "http://127.0.0.1:9000");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_an_error_after_the_retries() {
        // Port 1 on loopback refuses connections.
        let upstream = Upstream::unsigned(
            "http://127.0.0.1:1",
            UpstreamSettings {
                max_attempts: 2,
                initial_backoff_ms: 1,
                ..UpstreamSettings::default()
            },
        )
        .expect("client");
        let err = match upstream.send(Operation::Converse, "m", Bytes::from_static(b"{}")).await {
            Err(e) => e,
            Ok(_) => panic!("port 1 answered"),
        };
        assert!(matches!(err, UpstreamError::Unreachable { .. }), "{err}");
    }
}

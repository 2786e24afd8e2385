//! Tollgate inside an `aws-sdk-bedrockruntime` client: the service keeps
//! calling `client.converse()` and `client.converse_stream()`, and each call
//! goes through the tenant's policy, reservation, `requestMetadata` merge,
//! forwarding and settlement in process, with no second network hop.
//!
//! Invariants:
//! - The tenant is chosen by the service (the client's [`InProcess`] tenant,
//!   or [`AsTenant`] on one call), never by the request body.
//! - The SDK sees exactly what the HTTP gateway would have answered: the
//!   upstream's response, or a Bedrock-shaped error (`ThrottlingException`,
//!   `ServiceQuotaExceededException`, ...) that it parses into its own types
//!   and retries by its own rules.
//! - Nothing leaves the process but the forwarded call to the configured
//!   upstream (Bedrock, or the mock).
//!
//! ```no_run
//! # async fn demo(gateway: tollgate_host::gateway::Gateway) -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_host::TenantId;
//! use tollgate_host::sdk::InProcess;
//!
//! let sdk_config = aws_config::load_from_env().await;
//! let acme = InProcess::new(gateway, TenantId::new("acme")?);
//! let client = aws_sdk_bedrockruntime::Client::from_conf(acme.configure(&sdk_config).build());
//! // ... client.converse().model_id("amazon.nova-micro-v1:0").messages(...).send().await
//! # Ok(()) }
//! ```

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use aws_sdk_bedrockruntime::config::Builder as ClientConfigBuilder;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::StatusCode;
use percent_encoding::percent_decode_str;

use crate::contract::Operation;
use crate::gateway::{BedrockError, Call, CallBody, CallResponse, Gateway};
use crate::ids::TenantId;

/// The header [`AsTenant`] uses to hand its tenant to [`InProcess`]. It
/// never leaves the process: the connector forwards the body only.
const TENANT_HEADER: &str = "x-tollgate-in-process-tenant";

/// An SDK HTTP client that answers every call through a tollgate
/// [`Gateway`] in this process, as `tenant` unless [`AsTenant`] says
/// otherwise for one call.
#[derive(Clone)]
pub struct InProcess {
    gateway: Gateway,
    tenant: TenantId,
}

impl fmt::Debug for InProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcess")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl InProcess {
    pub fn new(gateway: Gateway, tenant: TenantId) -> InProcess {
        InProcess { gateway, tenant }
    }

    /// A client config builder from the service's own SDK config (region,
    /// credentials, retry and timeout settings), answering through tollgate.
    pub fn configure(self, sdk_config: &aws_types::SdkConfig) -> ClientConfigBuilder {
        ClientConfigBuilder::from(sdk_config).http_client(self.into_shared())
    }

    /// For an existing client: `client.config().to_builder().http_client(in_process.into_shared())`.
    pub fn into_shared(self) -> SharedHttpClient {
        SharedHttpClient::new(self)
    }
}

impl HttpClient for InProcess {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for InProcess {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move { this.answer(request).await })
    }
}

impl InProcess {
    async fn answer(&self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let tenant = match request.headers().get(TENANT_HEADER) {
            Some(id) => TenantId::new(id).map_err(|e| ConnectorError::user(Box::new(e)))?,
            None => self.tenant.clone(),
        };
        let (operation, model_id) = match route(request.uri()) {
            Ok(route) => route,
            Err(refused) => return Ok(error_response(&refused)),
        };
        let body = match request.body().bytes() {
            Some(bytes) => Bytes::copy_from_slice(bytes),
            None => {
                let refused = BedrockError::validation("tollgate needs the request body in memory, not a stream");
                return Ok(error_response(&refused));
            }
        };
        let call = Call {
            operation,
            model_id,
            body,
        };
        match self.gateway.call(&tenant, call).await {
            Ok(answer) => Ok(response(operation, answer)),
            Err(refused) => Ok(error_response(&refused)),
        }
    }
}

/// The operation and percent-decoded model id of `/model/{modelId}/{op}`.
fn route(uri: &str) -> Result<(Operation, String), BedrockError> {
    let path = uri
        .parse::<http::Uri>()
        .map(|u| u.path().to_owned())
        .unwrap_or_default();
    let unsupported = || {
        BedrockError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            format!("tollgate decides Converse and ConverseStream only; {path} is not one of them"),
        )
    };
    let rest = path.strip_prefix("/model/").ok_or_else(unsupported)?;
    let (model, op) = rest.rsplit_once('/').ok_or_else(unsupported)?;
    let operation = match op {
        "converse" => Operation::Converse,
        "converse-stream" => Operation::ConverseStream,
        _ => return Err(unsupported()),
    };
    let model_id = percent_decode_str(model)
        .decode_utf8()
        .map_err(|_| BedrockError::validation("The provided model identifier is not valid UTF-8"))?;
    Ok((operation, model_id.into_owned()))
}

fn response(operation: Operation, answer: CallResponse) -> HttpResponse {
    into_sdk(answer.into_http(operation, |body| match body {
        CallBody::Full(bytes) => SdkBody::from(bytes),
        // Fused: the SDK may poll a body again after its end.
        CallBody::Stream(frames) => SdkBody::from_body_1_x(Frames(Mutex::new(Box::pin(frames.fuse())))),
    }))
}

/// Event-stream frames as an HTTP body. The SDK wants a `Sync` body; the
/// mutex gives that, and is never contended (`poll_frame` has `&mut`).
struct Frames(Mutex<FrameStream>);

type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        let frames = self.get_mut().0.get_mut().unwrap_or_else(PoisonError::into_inner);
        frames
            .as_mut()
            .poll_next(cx)
            .map(|frame| frame.map(|bytes| bytes.map(http_body::Frame::data)))
    }
}

fn error_response(error: &BedrockError) -> HttpResponse {
    into_sdk(error.to_http().map(SdkBody::from))
}

fn into_sdk(response: http::Response<SdkBody>) -> HttpResponse {
    // Both sides are `http` 1.x, so the conversion cannot fail.
    HttpResponse::try_from(response).unwrap_or_else(|e| {
        let mut fallback = HttpResponse::new(500.try_into().expect("500 is a status"), SdkBody::empty());
        tracing::error!(error = %e, "could not convert a response for the SDK");
        fallback
            .headers_mut()
            .insert("x-amzn-errortype", "InternalServerException");
        fallback
    })
}

/// Runs one call as another tenant than the client's:
/// `client.converse().customize().interceptor(AsTenant::new(tenant))`.
#[derive(Debug, Clone)]
pub struct AsTenant(Arc<str>);

impl AsTenant {
    pub fn new(tenant: TenantId) -> AsTenant {
        AsTenant(Arc::from(tenant.as_str()))
    }
}

impl Intercept for AsTenant {
    fn name(&self) -> &'static str {
        "tollgate::AsTenant"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context
            .request_mut()
            .headers_mut()
            .insert(TENANT_HEADER, self.0.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_converse_paths_only() {
        let (op, model) = route("https://x/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse").unwrap();
        assert_eq!(
            (op, model.as_str()),
            (Operation::Converse, "us.anthropic.claude-sonnet-4-20250514-v1:0")
        );
        let (op, model) = route(
            "https://x/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aapplication-inference-profile%2Fabc/converse-stream",
        )
        .unwrap();
        assert_eq!(op, Operation::ConverseStream);
        assert_eq!(model, "arn:aws:bedrock:us-east-1:1:application-inference-profile/abc");
        assert_eq!(
            route("https://x/model/m/invoke").unwrap_err().error_type,
            "UnknownOperationException"
        );
        assert!(route("https://x/guardrail/g").is_err());
    }
}

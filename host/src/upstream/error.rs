//! Errors as Bedrock shapes them, so an AWS SDK raises its own exception
//! types (and retries what it would retry): the type in `x-amzn-ErrorType`,
//! the text in `{"message": ...}`.

use http::StatusCode;
use serde_json::json;

/// One Bedrock-shaped error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockError {
    pub status: StatusCode,
    /// E.g. `ValidationException`, `ThrottlingException`.
    pub error_type: &'static str,
    pub message: String,
    /// Seconds, for `Retry-After` on throttling.
    pub retry_after_secs: Option<u64>,
}

impl BedrockError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        BedrockError {
            status,
            error_type,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        BedrockError::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    /// 429 with `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn throttling(message: impl Into<String>, retry_after_ms: u64) -> Self {
        BedrockError {
            retry_after_secs: Some(retry_after_ms.div_ceil(1000).max(1)),
            ..BedrockError::new(StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", message)
        }
    }

    pub fn access_denied(message: impl Into<String>) -> Self {
        BedrockError::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }

    /// A budget or quota that waiting a little will not fix.
    pub fn quota_exceeded(message: impl Into<String>) -> Self {
        BedrockError::new(StatusCode::BAD_REQUEST, "ServiceQuotaExceededException", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        BedrockError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        BedrockError::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableException", message)
    }

    pub fn body(&self) -> String {
        json!({ "message": self.message }).to_string()
    }
}

impl std::fmt::Display for BedrockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.error_type, self.status.as_u16(), self.message)
    }
}

impl BedrockError {
    /// The response Bedrock would send: status, `x-amzn-errortype`,
    /// `Retry-After` when set, and the JSON message.
    pub fn to_http(&self) -> http::Response<String> {
        let mut response = http::Response::new(self.body());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert("x-amzn-errortype", http::HeaderValue::from_static(self.error_type));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(any(feature = "gateway", feature = "mock"))]
impl axum::response::IntoResponse for BedrockError {
    fn into_response(self) -> axum::response::Response {
        self.to_http().map(axum::body::Body::from)
    }
}

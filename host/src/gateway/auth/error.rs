//! Why a request was not authenticated, shaped for the caller.

use std::time::Duration;

use http::StatusCode;

/// How far a SigV4 request's `x-amz-date` may be from the gateway's clock (AWS uses the same window).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Why a request was not authenticated. `Display` says what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credential: send `Authorization: Bearer <your tollgate API key>` or sign the request with SigV4 \
         using your tollgate access key"
    )]
    Missing,
    #[error("malformed credential: {0}")]
    Malformed(String),
    #[error(
        "the API key or access key id is not known to this gateway; check the key your client uses, or ask the \
         operator to add it to the tenant's credentials"
    )]
    UnknownKey,
    #[error(
        "the request signature we calculated does not match the signature you provided; check the secret access \
         key, and that nothing between the client and tollgate rewrites the path, signed headers or body"
    )]
    BadSignature,
    #[error(
        "signature expired: the request was signed at {signed_at}, {skew_secs} s away from the gateway's clock \
         ({now}); at most {} s are allowed, so sync the client's clock (NTP) and send a freshly signed request",
        MAX_CLOCK_SKEW.as_secs()
    )]
    Expired {
        signed_at: String,
        now: String,
        skew_secs: u64,
    },
}

impl AuthError {
    /// The Bedrock/AWS error type name to answer with (`x-amzn-ErrorType` and `__type`).
    ///
    /// Signature problems use AWS's own `InvalidSignatureException`: the SDKs'
    /// clock-skew correction recognises it and re-signs with a corrected clock.
    pub fn error_type(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Malformed(_) => "AccessDeniedException",
            AuthError::UnknownKey => "UnrecognizedClientException",
            AuthError::BadSignature | AuthError::Expired { .. } => "InvalidSignatureException",
        }
    }

    /// The HTTP status: always 403, as AWS answers authentication failures.
    pub fn status(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }
}

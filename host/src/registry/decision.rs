//! What a decision yields: the policy's verdict checked against the
//! contract's bounds, or the tenant's failure mode when the policy failed.
//!
//! A failing policy never yields an error to the caller: a decision is always
//! made. Fail-closed rejects, fail-open admits and flags the decision.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::{Action, RejectKind, Verdict};
use crate::engine::failure::{FailureKind, PolicyFailure};
use crate::ids::PolicyVersionId;

/// Longest verdict reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most metadata pairs a verdict may attach.
pub const MAX_VERDICT_METADATA: usize = 8;
/// Longest metadata key or value, in characters (Bedrock's limit).
pub const MAX_METADATA_CHARS: usize = 256;
/// Metadata keys the host sets itself; a verdict may not use them.
pub const RESERVED_METADATA_PREFIX: &str = "tollgate-";
pub use crate::ids::MAX_MODEL_ID_BYTES;
/// Longest throttle a policy may ask for.
pub const MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// What a tenant's decision is when its policy fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Reject the call: nothing is spent that the policy did not approve.
    #[default]
    Closed,
    /// Admit the call, flagged: availability over cost control.
    Open,
}

/// The outcome of one decision.
#[derive(Debug, Clone)]
pub struct Decision {
    /// What to do with the call.
    pub action: Action,
    /// Why, for logs and the caller.
    pub reason: String,
    /// Metadata pairs the policy asked to attach.
    pub metadata: Vec<(String, String)>,
    /// Output token cap the policy set, if any.
    pub max_output_tokens: Option<u64>,
    /// The policy version that decided (or failed).
    pub version: PolicyVersionId,
    /// Wall time of the policy call, including instantiation.
    pub elapsed: Duration,
    /// Set when the policy failed and the failure mode decided instead.
    pub failure: Option<PolicyFailure>,
}

impl Decision {
    pub(crate) fn from_verdict(verdict: Verdict, version: PolicyVersionId, elapsed: Duration) -> Self {
        Decision {
            action: verdict.action,
            reason: verdict.reason,
            metadata: verdict.metadata,
            max_output_tokens: verdict.max_output_tokens,
            version,
            elapsed,
            failure: None,
        }
    }

    pub(crate) fn from_failure(
        failure: PolicyFailure,
        mode: FailureMode,
        version: PolicyVersionId,
        elapsed: Duration,
    ) -> Self {
        let (action, stance) = match mode {
            FailureMode::Closed => (
                Action::Reject(RejectKind::Denied),
                "failing closed: the call is rejected",
            ),
            FailureMode::Open => (Action::Admit, "failing open: the call is admitted unchecked"),
        };
        let reason =
            format!("policy {version} failed ({failure}); {stance}. Fix the policy or roll back to a previous version");
        Decision {
            action,
            reason,
            metadata: vec![("tollgate-policy-failure".into(), failure.kind.as_str().into())],
            max_output_tokens: None,
            version,
            elapsed,
            failure: Some(failure),
        }
    }

    /// Whether the policy's own verdict decided (not the failure mode).
    pub fn is_policy_verdict(&self) -> bool {
        self.failure.is_none()
    }
}

/// Checks a verdict against the contract's bounds.
pub(crate) fn check_verdict(verdict: &Verdict) -> Result<(), PolicyFailure> {
    let oversized = |detail: String| PolicyFailure {
        kind: FailureKind::OversizedOutput,
        detail,
    };
    let invalid = |detail: String| PolicyFailure {
        kind: FailureKind::InvalidOutput,
        detail,
    };
    if verdict.reason.len() > MAX_REASON_BYTES {
        return Err(oversized(format!(
            "reason is {} bytes; the limit is {MAX_REASON_BYTES}",
            verdict.reason.len()
        )));
    }
    if verdict.metadata.len() > MAX_VERDICT_METADATA {
        return Err(oversized(format!(
            "{} metadata pairs; the limit is {MAX_VERDICT_METADATA}",
            verdict.metadata.len()
        )));
    }
    for (key, value) in &verdict.metadata {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_METADATA_CHARS || value.chars().count() > MAX_METADATA_CHARS {
            return Err(oversized(format!(
                "metadata key {:?}: keys must be 1-{MAX_METADATA_CHARS} and values 0-{MAX_METADATA_CHARS} characters",
                &key[..key.floor_char_boundary(64)]
            )));
        }
        if key
            .get(..RESERVED_METADATA_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_METADATA_PREFIX))
        {
            return Err(invalid(format!(
                "metadata key {:?} is in the host's {RESERVED_METADATA_PREFIX} namespace; choose another key",
                &key[..key.floor_char_boundary(64)]
            )));
        }
        if let Some(c) = key.chars().chain(value.chars()).find(|c| !is_metadata_char(*c)) {
            return Err(invalid(format!(
                "metadata pair {:?} contains {c:?}; Bedrock allows only letters, digits, whitespace and :_@$#=/+,-.",
                &key[..key.floor_char_boundary(64)]
            )));
        }
    }
    match &verdict.action {
        Action::Downgrade(model) if model.is_empty() || model.len() > MAX_MODEL_ID_BYTES => Err(invalid(format!(
            "downgrade target must be a model id of 1-{MAX_MODEL_ID_BYTES} bytes"
        ))),
        // Bedrock model ids, profile ids and ARNs use no other characters; a
        // control character would also reach logs and headers.
        Action::Downgrade(model) if !model.chars().all(|c| c.is_ascii_alphanumeric() || ".:/_-".contains(c)) => {
            Err(invalid(format!(
                "downgrade target {:?} is not a Bedrock model id or ARN (letters, digits and . : / _ - only)",
                crate::text::clip(model, 64)
            )))
        }
        Action::Throttle(ms) if *ms > MAX_RETRY_AFTER_MS => Err(invalid(format!(
            "throttle of {ms} ms; the longest allowed is {MAX_RETRY_AFTER_MS} ms, reject instead"
        ))),
        _ if verdict.max_output_tokens == Some(0) => Err(invalid(
            "max-output-tokens cap of 0; omit the cap or reject instead".into(),
        )),
        _ => Ok(()),
    }
}

/// Bedrock's `requestMetadata` charset, `[a-zA-Z0-9\s:_@$#=/+,-.]`, where `\s`
/// is Java's: space, \t \n \x0B \f \r. Unicode whitespace is refused by Bedrock.
pub fn is_metadata_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r') || ":_@$#=/+,-.".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(action: Action) -> Verdict {
        Verdict {
            action,
            reason: "ok".into(),
            metadata: vec![],
            max_output_tokens: None,
        }
    }

    #[test]
    fn accepts_a_plain_verdict() {
        assert!(check_verdict(&verdict(Action::Admit)).is_ok());
        let mut v = verdict(Action::Downgrade("amazon.nova-micro-v1:0".into()));
        v.metadata.push(("budget-percent".into(), "81".into()));
        assert!(check_verdict(&v).is_ok());
    }

    #[test]
    fn refuses_oversized_and_invalid_output() {
        let mut v = verdict(Action::Admit);
        v.reason = "x".repeat(MAX_REASON_BYTES + 1);
        assert_eq!(check_verdict(&v).unwrap_err().kind, FailureKind::OversizedOutput);

        let mut v = verdict(Action::Admit);
        v.metadata = (0..9).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(check_verdict(&v).unwrap_err().kind, FailureKind::OversizedOutput);

        let mut v = verdict(Action::Admit);
        v.metadata = vec![("key".into(), "non\u{a0}breaking".into())];
        assert_eq!(
            check_verdict(&v).unwrap_err().kind,
            FailureKind::InvalidOutput,
            "ASCII whitespace only"
        );

        let v = verdict(Action::Downgrade("amazon.nova-micro-v1:0\r\nforged".into()));
        assert_eq!(
            check_verdict(&v).unwrap_err().kind,
            FailureKind::InvalidOutput,
            "control characters"
        );

        let mut v = verdict(Action::Admit);
        v.metadata = vec![("Tollgate-Tenant".into(), "someone-else".into())];
        let err = check_verdict(&v).unwrap_err();
        assert!(err.detail.contains("namespace"), "{}", err.detail);

        let mut v = verdict(Action::Admit);
        v.metadata = vec![("key".into(), "semi;colon".into())];
        let err = check_verdict(&v).unwrap_err();
        assert_eq!(err.kind, FailureKind::InvalidOutput);
        assert!(err.detail.contains("';'"), "{}", err.detail);

        assert!(check_verdict(&verdict(Action::Downgrade(String::new()))).is_err());
        assert!(check_verdict(&verdict(Action::Throttle(MAX_RETRY_AFTER_MS + 1))).is_err());
    }
}

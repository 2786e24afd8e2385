//! Builders for [`Verdict`].

use crate::{Action, RejectKind, Verdict};

impl Verdict {
    fn new(action: Action, reason: impl Into<String>) -> Self {
        Verdict {
            action,
            reason: reason.into(),
            metadata: Vec::new(),
            max_output_tokens: None,
        }
    }

    /// Forward the call as requested.
    pub fn admit(reason: impl Into<String>) -> Self {
        Self::new(Action::Admit, reason)
    }

    /// Forward the call to the cheaper `model` instead.
    pub fn downgrade(model: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(Action::Downgrade(model.into()), reason)
    }

    /// Refuse for now; the caller may retry after `retry_after_ms`.
    pub fn throttle(retry_after_ms: u64, reason: impl Into<String>) -> Self {
        Self::new(Action::Throttle(retry_after_ms), reason)
    }

    /// Refuse the call.
    pub fn reject(kind: RejectKind, reason: impl Into<String>) -> Self {
        Self::new(Action::Reject(kind), reason)
    }

    /// Adds a `requestMetadata` pair to the forwarded call (at most 8).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Lowers the call's output token ceiling to at most `tokens`.
    pub fn cap_output_tokens(mut self, tokens: u64) -> Self {
        self.max_output_tokens = Some(tokens.max(1));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        let v = Verdict::downgrade("amazon.nova-micro-v1:0", "85% of budget")
            .with_metadata("budget-percent", "85")
            .cap_output_tokens(0);
        assert!(matches!(v.action, Action::Downgrade(ref m) if m == "amazon.nova-micro-v1:0"));
        assert_eq!(v.metadata, vec![("budget-percent".to_string(), "85".to_string())]);
        assert_eq!(v.max_output_tokens, Some(1));
        assert!(matches!(
            Verdict::reject(RejectKind::Denied, "no").action,
            Action::Reject(RejectKind::Denied)
        ));
        assert!(matches!(Verdict::throttle(5, "wait").action, Action::Throttle(5)));
    }
}

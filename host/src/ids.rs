//! Identifiers that cross the API: a tenant and a model are not just strings.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A tenant's id as the operator configured it. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Tenant ids are 1–128 characters of `[A-Za-z0-9._-]`, so they are safe
    /// in file names, metric labels and Bedrock request metadata.
    pub fn new(id: &str) -> Result<Self, InvalidId> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(TenantId(Arc::from(id)))
        } else {
            Err(InvalidId {
                kind: "tenant id",
                value: id.chars().take(64).collect(),
                rule: "1-128 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Bedrock model id, regional inference profile id or inference profile ARN.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelId(Arc<str>);

impl ModelId {
    pub fn new(id: &str) -> Self {
        ModelId(Arc::from(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id without a cross-region inference prefix (`us.`, `eu.`, `apac.`,
    /// `global.`, ...), i.e. the base model it runs on.
    pub fn without_region_prefix(&self) -> &str {
        split_region_prefix(&self.0).1
    }
}

/// The longest model id or ARN tollgate accepts anywhere: from a caller, a
/// policy's verdict, its `price` calls or a downgrade chain (ARNs end well before).
pub const MAX_MODEL_ID_BYTES: usize = 2048;

/// Prefixes of Bedrock's system-defined (cross-region) inference profiles,
/// written without their trailing dot.
pub const REGION_PREFIXES: [&str; 9] = ["us", "eu", "apac", "jp", "au", "ca", "in", "us-gov", "global"];

/// Splits `us.anthropic.…` into `(Some("us"), "anthropic.…")`; an id without
/// a known prefix comes back whole.
pub fn split_region_prefix(model_id: &str) -> (Option<&'static str>, &str) {
    for prefix in REGION_PREFIXES {
        if let Some(rest) = model_id.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
            && !rest.is_empty()
        {
            return (Some(prefix), rest);
        }
    }
    (None, model_id)
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id that breaks its rules.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {kind} {value:?}: expected {rule}")]
pub struct InvalidId {
    kind: &'static str,
    value: String,
    rule: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked() {
        assert!(TenantId::new("acme-corp_1.eu").is_ok());
        assert!(TenantId::new("").is_err());
        assert!(TenantId::new("a/b").is_err());
        let err = TenantId::new("bad tenant").unwrap_err().to_string();
        assert!(err.contains("bad tenant") && err.contains("expected"), "{err}");
    }

    #[test]
    fn strips_regional_prefix() {
        let m = ModelId::new("us.anthropic.claude-3-5-haiku-20241022-v1:0");
        assert_eq!(m.without_region_prefix(), "anthropic.claude-3-5-haiku-20241022-v1:0");
        let m = ModelId::new("amazon.nova-micro-v1:0");
        assert_eq!(m.without_region_prefix(), "amazon.nova-micro-v1:0");
    }
}

/// Which version of which tenant's policy; shown as `tenant@v3`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyVersionId {
    pub tenant: TenantId,
    /// Per-tenant sequence number, from 1.
    pub number: u32,
    /// First 12 hex digits of the component's sha256.
    pub digest: Arc<str>,
}

impl fmt::Display for PolicyVersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@v{}", self.tenant, self.number)
    }
}

//! A tenant as the gateway runs it: plan, limits, state and credentials.
//! Seeded from `tollgate.toml`, changed through the admin API, kept in the
//! control store. Secrets are never printed by `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::TenantConfig;
use crate::ledger::TenantLimits;

/// One tenant's runtime definition.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantRecord {
    pub tier: String,
    pub limits: TenantLimits,
    /// A disabled tenant's calls are refused; its keys and books are kept.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub allow_costlier_downgrade: bool,
    /// Model id → the tenant's application inference profile ARN.
    #[serde(default)]
    pub inference_profiles: BTreeMap<String, String>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyRecord>,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyRecord>,
    /// The hash of the configuration it was seeded from; `None` for a
    /// tenant created at runtime. A different one at start means the file
    /// changed, and the file wins.
    #[serde(default)]
    pub seed: Option<String>,
}

/// A bearer key, by its SHA-256 only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApiKeyRecord {
    /// What the admin API names it by: `key-` and 12 hex digits of its hash.
    pub id: String,
    pub sha256: String,
    #[serde(default)]
    pub created_at_ms: u64,
}

/// A SigV4 access key; its secret is needed to check signatures.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub created_at_ms: u64,
}

impl ApiKeyRecord {
    /// A key from its SHA-256 in hex.
    pub fn from_sha256(sha256: &str, created_at_ms: u64) -> ApiKeyRecord {
        let sha256 = sha256.trim().to_ascii_lowercase();
        ApiKeyRecord {
            id: format!("key-{}", sha256.get(..12).unwrap_or(&sha256)),
            sha256,
            created_at_ms,
        }
    }

    /// A key from its plaintext, of which only the hash is kept.
    pub fn from_plaintext(key: &str, created_at_ms: u64) -> ApiKeyRecord {
        Self::from_sha256(&hex::encode(Sha256::digest(key.as_bytes())), created_at_ms)
    }
}

impl TenantRecord {
    /// The record `tollgate.toml` describes, with its seed hash.
    pub fn from_config(config: &TenantConfig) -> Result<TenantRecord, String> {
        let mut api_keys = Vec::new();
        for key in &config.api_keys {
            match (&key.key_sha256, &key.key) {
                (Some(hash), None) => api_keys.push(ApiKeyRecord::from_sha256(hash, 0)),
                (None, Some(plain)) => api_keys.push(ApiKeyRecord::from_plaintext(plain, 0)),
                _ => return Err("each api-keys entry needs exactly one of key-sha256 or key".into()),
            }
        }
        let mut record = TenantRecord {
            tier: config.tier.clone(),
            limits: config.limits(),
            disabled: false,
            allow_costlier_downgrade: config.allow_costlier_downgrade,
            inference_profiles: config.inference_profiles.clone(),
            api_keys,
            access_keys: config
                .access_keys
                .iter()
                .map(|k| AccessKeyRecord {
                    access_key_id: k.access_key_id.clone(),
                    secret_access_key: k.secret_access_key.clone(),
                    created_at_ms: 0,
                })
                .collect(),
            seed: None,
        };
        let json = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        record.seed = Some(hex::encode(Sha256::digest(&json)));
        Ok(record)
    }

    /// A tenant created at runtime, with no keys yet.
    pub fn new(tier: String, limits: TenantLimits) -> TenantRecord {
        TenantRecord {
            tier,
            limits,
            disabled: false,
            allow_costlier_downgrade: false,
            inference_profiles: BTreeMap::new(),
            api_keys: Vec::new(),
            access_keys: Vec::new(),
            seed: None,
        }
    }
}

impl fmt::Debug for TenantRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantRecord")
            .field("tier", &self.tier)
            .field("limits", &self.limits)
            .field("disabled", &self.disabled)
            .field("api_keys", &self.api_keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .field("access_keys", &self.access_keys)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AccessKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyRecord")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_kept_by_its_hash_and_named_by_its_prefix() {
        let key = ApiKeyRecord::from_plaintext("a-tenant-key-of-some-length", 5);
        assert_eq!(key.sha256.len(), 64);
        assert_eq!(key.id, format!("key-{}", &key.sha256[..12]));
        assert_eq!(ApiKeyRecord::from_sha256(&key.sha256.to_uppercase(), 5), key);
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let record = TenantRecord {
            access_keys: vec![AccessKeyRecord {
                access_key_id: "AKIDX".into(),
                secret_access_key: "very-secret".into(),
                created_at_ms: 0,
            }],
            ..TenantRecord::new("pro".into(), TenantLimits::monthly(crate::money::NanoUsd(1)))
        };
        let printed = format!("{record:?}");
        assert!(
            printed.contains("AKIDX") && !printed.contains("very-secret"),
            "{printed}"
        );
    }
}

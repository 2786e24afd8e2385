//! Tenants' credentials as written in `tollgate.toml`. Plain data: the
//! gateway's `auth` turns them into what it checks requests against.

use std::fmt;

use serde::Deserialize;

/// A tenant's credentials as written in `tollgate.toml`, e.g.
///
/// ```toml
/// [[tenants.acme.api-keys]]
/// key-sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
/// [[tenants.acme.access-keys]]
/// access-key-id = "AKIDACMEEXAMPLE"
/// secret-access-key = "..."
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CredentialsConfig {
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
}

/// One bearer key: either its SHA-256 (hex, preferred) or the key itself, hashed at load.
#[derive(Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub key_sha256: Option<String>,
    pub key: Option<String>,
}

/// One SigV4 access key.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct AccessKeyConfig {
    pub access_key_id: String,
    pub secret_access_key: String,
}

// Secrets never reach logs through Debug.
impl fmt::Debug for CredentialsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialsConfig")
            .field("api_keys", &self.api_keys.len())
            .field(
                "access_keys",
                &self.access_keys.iter().map(|k| &k.access_key_id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("key_sha256", &self.key_sha256)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for AccessKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyConfig")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

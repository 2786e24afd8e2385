//! `[policy-dir]`: a directory of tenants' policy files the gateway
//! watches, applying each change once it validates.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PolicyDirConfig {
    /// One `<tenant>.toml` per tenant (see `registry::policy_dir`); unset, nothing is watched.
    pub path: Option<PathBuf>,
    /// Quiet time after the last change before the directory is read, so an
    /// editor's partial writes are read once, whole.
    pub debounce_ms: u64,
}

impl Default for PolicyDirConfig {
    fn default() -> Self {
        PolicyDirConfig {
            path: None,
            debounce_ms: 300,
        }
    }
}

/// Bounds of `[policy-dir] debounce-ms`.
pub const DEBOUNCE_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

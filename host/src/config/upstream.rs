//! How Bedrock is reached, as written under `[upstream]`. Plain data: the
//! `upstream` module builds its client from it.

use std::path::PathBuf;

use serde::Deserialize;

/// How the upstream is reached, as written under `[upstream]` in `tollgate.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Base URL; `None` means the region's public endpoint
    /// (`https://bedrock-runtime.{region}.amazonaws.com`).
    pub endpoint: Option<String>,
    /// The region to sign for; `None` takes it from the AWS config chain.
    pub region: Option<String>,
    /// `sigv4` (the credential chain), `bearer` (a Bedrock API key from
    /// `AWS_BEARER_TOKEN_BEDROCK`) or `none` (the mock).
    pub auth: UpstreamAuthKind,
    /// PEM certificates trusted besides the public roots, for a private
    /// endpoint or a TLS-inspecting proxy. `None` takes `AWS_CA_BUNDLE`, as
    /// the AWS SDKs do. Relative to `tollgate.toml`.
    pub ca_bundle: Option<PathBuf>,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The wait before the first retry; doubles each retry, with jitter.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub connect_timeout_ms: u64,
    /// A whole Converse call, or a stream's first byte.
    pub timeout_ms: u64,
    /// The longest silence inside a stream before it is cut; also the
    /// longest a frame waits for a caller that stopped reading, after which
    /// that caller is cut and the stream read on as for one that left.
    pub stream_idle_timeout_ms: u64,
    /// The longest a stream may run, first byte to last, before it is cut
    /// (and charged at its hold): what bounds a call's life, so its hold can
    /// be sure to outlive it.
    pub stream_max_ms: u64,
    /// How long a stream whose caller left is read on, to charge its real
    /// usage from the final metadata event; 0 stops at once and charges the
    /// hold. Never beyond `stream-max-ms`.
    pub stream_drain_ms: u64,
}

impl UpstreamSettings {
    /// The longest a call can take under these settings, retries and a
    /// stream's whole length included: every attempt may wait its connect
    /// and request timeouts, and every retry its longest backoff.
    pub fn longest_call_ms(&self) -> u64 {
        let attempts = u64::from(self.max_attempts.max(1));
        let per_attempt = self.connect_timeout_ms.saturating_add(self.timeout_ms);
        attempts
            .saturating_mul(per_attempt)
            .saturating_add((attempts - 1).saturating_mul(self.max_backoff_ms))
            .saturating_add(self.stream_max_ms)
    }
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            endpoint: None,
            region: None,
            auth: UpstreamAuthKind::Sigv4,
            ca_bundle: None,
            max_attempts: 3,
            initial_backoff_ms: 100,
            max_backoff_ms: 5_000,
            connect_timeout_ms: 3_000,
            timeout_ms: 300_000,
            stream_idle_timeout_ms: 120_000,
            stream_max_ms: 30 * 60 * 1000,
            stream_drain_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamAuthKind {
    #[default]
    Sigv4,
    Bearer,
    None,
}

//! `[server]`: the listeners and the limits of their edges.

use std::path::PathBuf;

use serde::Deserialize;

/// Largest request body the tenant listener accepts by default (Bedrock's own limit).
pub const DEFAULT_MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// The operator listener: the admin API, `/metrics` and `/readyz`. Same
    /// TLS settings as `listen`; keep it where only operators reach.
    pub admin_listen: String,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP. SDKs send bearer keys only over HTTPS; SigV4 works over either.
    pub plain_http: bool,
    pub max_body_bytes: usize,
    pub admin_token: Option<String>,
    /// Seconds calls in flight get to finish at shutdown.
    pub shutdown_grace_secs: u64,
    /// Open connections at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Model calls being admitted at once; one more gets a 503 at once.
    pub max_in_flight: usize,
    /// How long a connection may take to send a request's head, counted
    /// from when it starts waiting for one: bounds slow clients and idle
    /// kept-alive connections alike.
    pub header_read_timeout_ms: u64,
    /// How long a model call's body may take to arrive after its head.
    pub body_read_timeout_ms: u64,
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout_ms: u64,
    /// How long a write to a client may wait for it to read (its receive
    /// window full) before the connection is closed: a client that stops
    /// reading an answer holds no connection, buffer or call for good.
    pub write_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8443".into(),
            admin_listen: "127.0.0.1:8444".into(),
            tls_cert: None,
            tls_key: None,
            plain_http: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            admin_token: None,
            shutdown_grace_secs: 30,
            max_connections: 4096,
            max_in_flight: 4096,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 60_000,
            tls_handshake_timeout_ms: 10_000,
            write_timeout_ms: 60_000,
        }
    }
}

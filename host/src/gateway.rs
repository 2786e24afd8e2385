//! The gateway: a Bedrock-compatible endpoint that decides each call with the
//! tenant's policy, forwards it with metadata, and charges the real usage.
//!
//! [`service`] is the request path as a library; [`server`] puts HTTP(S) in
//! front of it; [`app`] assembles both from `tollgate.toml` ([`crate::config`]).

pub mod admin;
pub mod app;
pub mod auth;
mod call_options;
mod detach;
pub mod directory;
mod fleet;
mod fleet_alerts;
pub mod invocation_log;
pub mod lifecycle;
pub mod listener;
pub mod log_restore;
pub mod log_writer;
pub mod metadata;
pub mod metrics;
pub mod policy_watch;
pub mod reconcile;
mod refusal;
mod request_body;
pub mod restored;
pub mod server;
pub mod service;
mod settlement;
pub mod shadowing;
mod stream_pump;
mod trace;
mod upkeep;
pub mod usage_series;
mod verdict_check;

pub use crate::upstream::error::BedrockError;
pub use service::{Call, CallBody, CallResponse, Gateway, GatewayParts, TenantProfile};
pub use upkeep::EXPIRY_SWEEP;

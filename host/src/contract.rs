//! The host's side of the WIT contract in `wit/policy.wit`.
//!
//! These types mirror `tollgate:policy/types@0.2.0` field by field and are
//! lowered into and lifted out of a policy directly (no conversion step on
//! the request path). A mismatch with the WIT is caught by wasmtime's type
//! check when a component is loaded, and by the contract tests below.
//! Components built against 0.1.0 get the projection in [`v0_1`].
//! Money fields are nano-dollars; see [`crate::NanoUsd`] for arithmetic.

pub mod local_time;
pub mod v0_1;

use serde::{Deserialize, Serialize};
use wasmtime::component::{ComponentType, Lift, Lower};

pub use local_time::{LocalTime, Weekday};

/// `operation`: the Bedrock runtime call being made.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    #[default]
    #[component(name = "converse")]
    Converse,
    #[component(name = "converse-stream")]
    ConverseStream,
}

/// `request`: one call as the host sees it before forwarding.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Request {
    #[component(name = "request-id")]
    pub request_id: String,
    #[component(name = "tenant-id")]
    pub tenant_id: String,
    #[component(name = "user-id")]
    pub user_id: String,
    #[component(name = "use-case")]
    pub use_case: String,
    pub operation: Operation,
    #[component(name = "model-id")]
    pub model_id: String,
    #[component(name = "base-model-id")]
    pub base_model_id: String,
    #[component(name = "estimated-input-tokens")]
    pub estimated_input_tokens: u64,
    #[component(name = "max-output-tokens")]
    pub max_output_tokens: u64,
    /// Nano-dollars.
    #[component(name = "worst-case-cost")]
    pub worst_case_cost: u64,
    pub metadata: Vec<(String, String)>,
    #[component(name = "now-ms")]
    pub now_ms: u64,
    pub config: String,
    #[component(name = "service-tier")]
    pub service_tier: ServiceTier,
    #[component(name = "latency-mode")]
    pub latency_mode: LatencyMode,
    #[component(name = "cache-points")]
    pub cache_points: Vec<CachePoint>,
    pub requested: ModelOption,
    #[component(name = "downgrade-chain")]
    pub downgrade_chain: Vec<ModelOption>,
}

/// `service-tier`: the processing tier the caller asked for.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceTier {
    #[default]
    #[component(name = "standard")]
    Standard,
    #[component(name = "priority")]
    Priority,
    #[component(name = "flex")]
    Flex,
    #[component(name = "reserved")]
    Reserved,
}

/// `latency-mode`: `performanceConfig.latency`.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyMode {
    #[default]
    #[component(name = "standard")]
    Standard,
    #[component(name = "optimized")]
    Optimized,
}

/// `cache-location`: where a cache point sits in the request.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum CacheLocation {
    #[component(name = "system")]
    System,
    #[default]
    #[component(name = "messages")]
    Messages,
    #[component(name = "tools")]
    Tools,
}

/// `cache-ttl`: how long a cache entry written at a cache point lives.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum CacheTtl {
    #[default]
    #[component(name = "five-minutes")]
    FiveMinutes,
    #[component(name = "one-hour")]
    OneHour,
}

/// `cache-point`: one `cachePoint` block of the request.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct CachePoint {
    pub location: CacheLocation,
    pub ttl: CacheTtl,
}

/// `model-option`: a model the call could go to, priced for the call.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ModelOption {
    #[component(name = "model-id")]
    pub model_id: String,
    pub price: Option<ModelPrice>,
    /// Nano-dollars.
    #[component(name = "worst-case-cost")]
    pub worst_case_cost: Option<u64>,
}

/// `period`: length of a budget period.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum Period {
    #[component(name = "daily")]
    Daily,
    #[component(name = "weekly")]
    Weekly,
    #[default]
    #[component(name = "monthly")]
    Monthly,
}

/// `budget`: the money budget of the current period, in nano-dollars.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Budget {
    pub limit: u64,
    pub spent: u64,
    pub reserved: u64,
    pub period: Period,
    #[component(name = "period-start-ms")]
    pub period_start_ms: u64,
    #[component(name = "period-end-ms")]
    pub period_end_ms: u64,
    #[component(name = "days-elapsed")]
    pub days_elapsed: u32,
    #[component(name = "days-remaining")]
    pub days_remaining: u32,
}

/// `indicators`: leading indicators, nano-dollars (per hour for rates).
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Indicators {
    #[component(name = "burn-rate-short")]
    pub burn_rate_short: u64,
    #[component(name = "burn-rate-long")]
    pub burn_rate_long: u64,
    #[component(name = "baseline-burn-rate")]
    pub baseline_burn_rate: u64,
    #[component(name = "forecast-spend")]
    pub forecast_spend: u64,
}

/// `rate-window`: the last minute's usage and the tenant's rate limits.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct RateWindow {
    pub requests: u32,
    pub tokens: u64,
    #[component(name = "rpm-limit")]
    pub rpm_limit: Option<u32>,
    #[component(name = "tpm-limit")]
    pub tpm_limit: Option<u64>,
}

/// `plan`: the tenant's tier and included tokens.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct Plan {
    pub tier: String,
    #[component(name = "included-tokens")]
    pub included_tokens: u64,
    #[component(name = "used-tokens")]
    pub used_tokens: u64,
}

/// `alert-level`: green → yellow → orange → red.
#[derive(
    ComponentType,
    Lift,
    Lower,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum AlertLevel {
    #[default]
    #[component(name = "green")]
    Green,
    #[component(name = "yellow")]
    Yellow,
    #[component(name = "orange")]
    Orange,
    #[component(name = "red")]
    Red,
}

/// `tenant-state`: everything the host knows about the tenant.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct TenantState {
    pub plan: Plan,
    pub budget: Budget,
    pub indicators: Indicators,
    pub window: RateWindow,
    pub alert: AlertLevel,
    #[component(name = "aggregate-alert")]
    pub aggregate_alert: AlertLevel,
    pub clock: LocalTime,
    #[component(name = "open-reservations")]
    pub open_reservations: u32,
}

/// `reject-kind`: why a call is refused.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[component(enum)]
#[repr(u8)]
#[serde(rename_all = "kebab-case")]
pub enum RejectKind {
    #[component(name = "budget-exhausted")]
    BudgetExhausted,
    #[component(name = "quota-exceeded")]
    QuotaExceeded,
    #[component(name = "model-not-allowed")]
    ModelNotAllowed,
    #[component(name = "denied")]
    Denied,
}

impl RejectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::BudgetExhausted => "budget-exhausted",
            RejectKind::QuotaExceeded => "quota-exceeded",
            RejectKind::ModelNotAllowed => "model-not-allowed",
            RejectKind::Denied => "denied",
        }
    }
}

/// `action`: what to do with the call.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(variant)]
pub enum Action {
    #[component(name = "admit")]
    Admit,
    /// Forward to this cheaper model id instead.
    #[component(name = "downgrade")]
    Downgrade(String),
    /// Retry after this many milliseconds.
    #[component(name = "throttle")]
    Throttle(u64),
    #[component(name = "reject")]
    Reject(RejectKind),
}

impl Action {
    /// The action's name as used in logs, metrics and cases files.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Admit => "admit",
            Action::Downgrade(_) => "downgrade",
            Action::Throttle(_) => "throttle",
            Action::Reject(_) => "reject",
        }
    }
}

/// `verdict`: a policy's decision as the policy returned it.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct Verdict {
    pub action: Action,
    pub reason: String,
    pub metadata: Vec<(String, String)>,
    #[component(name = "max-output-tokens")]
    pub max_output_tokens: Option<u64>,
}

/// `log-level` of the `host` interface.
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub enum LogLevel {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

/// `model-price`: nano-dollars per million tokens.
#[derive(ComponentType, Lift, Lower, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[component(record)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct ModelPrice {
    pub input: u64,
    pub output: u64,
    #[component(name = "cache-read")]
    pub cache_read: u64,
    /// 5-minute TTL writes.
    #[component(name = "cache-write")]
    pub cache_write: u64,
    /// 1-hour TTL writes.
    #[component(name = "cache-write-long")]
    pub cache_write_long: u64,
}

/// A version of the contract a component targets. The host runs each
/// component against the version it was built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContractVersion {
    V0_1,
    V0_2,
}

impl ContractVersion {
    /// The newest version, the one `wit/policy.wit` defines.
    pub const CURRENT: ContractVersion = ContractVersion::V0_2;
    /// Every version the host runs, oldest first.
    pub const SUPPORTED: [ContractVersion; 2] = [ContractVersion::V0_1, ContractVersion::V0_2];

    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => "0.1.0",
            ContractVersion::V0_2 => "0.2.0",
        }
    }

    /// The host-function interface of this version.
    pub fn host_interface(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => names::HOST_INTERFACE_0_1,
            ContractVersion::V0_2 => names::HOST_INTERFACE,
        }
    }

    /// The type-only interface of this version.
    pub fn types_interface(self) -> &'static str {
        match self {
            ContractVersion::V0_1 => names::TYPES_INTERFACE_0_1,
            ContractVersion::V0_2 => names::TYPES_INTERFACE,
        }
    }

    /// The version whose interface `import` is, if any.
    pub fn of_import(import: &str) -> Option<ContractVersion> {
        Self::SUPPORTED
            .into_iter()
            .find(|v| import == v.host_interface() || import == v.types_interface())
    }
}

impl std::fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tollgate:policy@{}", self.as_str())
    }
}

/// Names in the WIT package that the host links against.
pub mod names {
    /// The interface of host functions a policy may import.
    pub const HOST_INTERFACE: &str = "tollgate:policy/host@0.2.0";
    /// The type-only interface every policy imports.
    pub const TYPES_INTERFACE: &str = "tollgate:policy/types@0.2.0";
    /// The same interfaces of contract 0.1.0, still served.
    pub const HOST_INTERFACE_0_1: &str = "tollgate:policy/host@0.1.0";
    pub const TYPES_INTERFACE_0_1: &str = "tollgate:policy/types@0.1.0";
    /// The required export.
    pub const DECIDE: &str = "decide";
    /// The optional export.
    pub const VALIDATE_CONFIG: &str = "validate-config";
}

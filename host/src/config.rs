//! `tollgate.toml`: the gateway's whole configuration in one file, with
//! `TOLLGATE_*` environment overrides for what differs per deployment.
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8443"
//! tls-cert = "cert.pem"            # HTTPS; or plain-http = true (loopback, or behind a TLS proxy)
//! tls-key = "key.pem"
//! admin-token = "..."              # or TOLLGATE_ADMIN_TOKEN; no token, no admin API
//!
//! [upstream]
//! kind = "bedrock"                 # or "mock": the built-in mock Bedrock
//! [upstream.bedrock]
//! region = "us-east-1"             # else the AWS config chain's
//!
//! [ledger]
//! store = "durable"                # or "memory"
//! path = "tollgate-data/ledger.redb"
//!
//! [tenants.acme]
//! tier = "pro"
//! budget-usd = "250.00"
//! period = "monthly"
//! time-zone = "Europe/Berlin"
//! policy = "policies/budget_guard.wasm"
//! [tenants.acme.policy-config]
//! downgrade-to = "amazon.nova-lite-v1:0"
//! [[tenants.acme.api-keys]]
//! key-sha256 = "..."
//! ```
//!
//! Relative paths are relative to the file. Every error names the file, the
//! key and the reason, and the gateway refuses to start with it.

pub mod control;
pub mod credentials;
pub mod ledger;
pub mod policy_dir;
pub mod server;
pub mod upstream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

use crate::alerts::AlertSettings;
use crate::ids::TenantId;
use crate::ledger::{Period, TenantLimits};
use crate::money::NanoUsd;
use crate::registry::decision::FailureMode;
use crate::registry::policy_dir::InstancesSetting;
use crate::registry::{BreakerSettings, PoolSettings};
pub use control::{ControlConfig, ControlPlace};
use credentials::{AccessKeyConfig, ApiKeyConfig, CredentialsConfig};
pub use ledger::{CHECKPOINT_MS, CommitMode, LedgerConfig, RedisConfig, RedisFailureMode, StoreKind};
pub use policy_dir::PolicyDirConfig;
pub use server::{DEFAULT_MAX_BODY_BYTES, ServerConfig};
use upstream::UpstreamSettings;

/// The environment variables that override the file, and the keys they replace.
pub const ENV_OVERRIDES: [(&str, &str); 8] = [
    ("TOLLGATE_LISTEN", "server.listen"),
    ("TOLLGATE_ADMIN_TOKEN", "server.admin-token"),
    ("TOLLGATE_PLAIN_HTTP", "server.plain-http"),
    ("TOLLGATE_UPSTREAM", "upstream.kind"),
    ("TOLLGATE_BEDROCK_REGION", "upstream.bedrock.region"),
    ("TOLLGATE_BEDROCK_ENDPOINT", "upstream.bedrock.endpoint"),
    ("TOLLGATE_LEDGER_PATH", "ledger.path"),
    ("TOLLGATE_INVOCATION_LOG", "log.invocations"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub policy_dir: PolicyDirConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub pricing: PricingConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub estimator: EstimatorConfig,
    #[serde(default)]
    pub alerts: AlertSettings,
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Where the file was read from; relative paths resolve against its directory.
    #[serde(skip)]
    pub origin: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamKind {
    /// The built-in mock Bedrock, in process: no AWS account needed.
    #[default]
    Mock,
    /// Bedrock (or a Bedrock-compatible endpoint), per `[upstream.bedrock]`.
    Bedrock,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    pub mock: MockConfig,
    pub bedrock: UpstreamSettings,
}

impl UpstreamConfig {
    /// The settings calls actually run under: the built-in mock uses the defaults.
    pub fn effective(&self) -> UpstreamSettings {
        match self.kind {
            UpstreamKind::Mock => UpstreamSettings::default(),
            UpstreamKind::Bedrock => self.bedrock.clone(),
        }
    }
}

/// Time a hold needs beyond its call's end for the settle itself.
const SETTLE_MARGIN_MS: u64 = 60_000;
/// The longest first pause of the policy circuit breaker.
const MAX_COOLDOWN_MS: u64 = crate::registry::breaker::MAX_COOLDOWN.as_millis() as u64;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MockConfig {
    pub latency_ms: u64,
    pub stream_event_interval_ms: u64,
}

/// How input tokens are estimated before a call.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EstimatorConfig {
    /// Every estimate times this percentage (100: as estimated and
    /// calibrated). Above 100 makes holds more conservative; below 100 is
    /// for proving the budget gate when estimates run low. Budgets hold
    /// either way: admission counts each call at its byte-bounded ceiling.
    pub input_scale_percent: u64,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            input_scale_percent: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct LogConfig {
    /// The JSONL invocation log; `""` turns it off.
    pub invocations: PathBuf,
    /// Rotate the log when it reaches this many bytes; 0 never.
    pub max_bytes: u64,
    /// Rotate it when the UTC `hour` or `day` changes, or `never`.
    pub rotate_every: RotateEvery,
    /// Records queued for the writer thread before calls wait for the disk.
    pub queue: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            invocations: PathBuf::from("tollgate-data/invocations.jsonl"),
            max_bytes: 256 << 20,
            rotate_every: RotateEvery::Day,
            queue: 65_536,
        }
    }
}

/// When the invocation log is rotated by time (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RotateEvery {
    Never,
    Hour,
    #[default]
    Day,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PricingConfig {
    /// A price file over the embedded catalog (see `host/src/pricing/catalog.toml`).
    pub overrides: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Precompiled policies, so a restart does not compile them again.
    pub cache_dir: Option<PathBuf>,
    /// Threads that run policies; 0 = one per core (at least 2).
    pub decision_threads: usize,
    /// Decisions one tenant may run at once; 0 = half the threads (at least 1).
    pub tenant_concurrency: usize,
    /// The longest a call waits for a decision thread before its tenant's
    /// failure mode decides it.
    pub queue_timeout_ms: u64,
    /// Failures in a row after which a policy is skipped for a while and its
    /// failure mode decides at once; 0 turns this off.
    pub breaker_failures: u32,
    /// The first pause after such a run of failures; it doubles on each
    /// further one, up to 30 s.
    pub breaker_cooldown_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let pool = PoolSettings::default();
        let breaker = BreakerSettings::default();
        EngineConfig {
            cache_dir: Some(PathBuf::from("tollgate-data/cache")),
            decision_threads: pool.threads,
            tenant_concurrency: pool.tenant_concurrency,
            queue_timeout_ms: pool.queue_timeout.as_millis() as u64,
            breaker_failures: breaker.threshold,
            breaker_cooldown_ms: breaker.cooldown.as_millis() as u64,
        }
    }
}

impl EngineConfig {
    pub fn pool(&self) -> PoolSettings {
        PoolSettings {
            threads: self.decision_threads,
            tenant_concurrency: self.tenant_concurrency,
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
        }
    }

    pub fn breaker(&self) -> BreakerSettings {
        BreakerSettings {
            threshold: self.breaker_failures,
            cooldown: Duration::from_millis(self.breaker_cooldown_ms),
        }
    }
}

/// A budget in dollars, written as a decimal string ("250.00") or an integer (250). Floats are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usd(pub NanoUsd);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
            Float(f64),
        }
        let expected = "dollars as a decimal string like \"250.00\" (at most 9 decimals) or a whole number";
        match Raw::deserialize(deserializer)? {
            Raw::Int(n) => n
                .checked_mul(NanoUsd::PER_USD)
                .map(|n| Usd(NanoUsd(n)))
                .ok_or_else(|| D::Error::custom("the amount is too large")),
            Raw::Text(s) => NanoUsd::parse_usd(&s)
                .map(Usd)
                .ok_or_else(|| D::Error::custom(format!("{s:?} is not {expected}"))),
            Raw::Float(f) => Err(D::Error::custom(format!(
                "{f} is a float; money is exact here: write {expected}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TenantConfig {
    #[serde(default)]
    pub tier: String,
    pub budget_usd: Usd,
    #[serde(default)]
    pub period: Period,
    #[serde(default = "utc")]
    pub time_zone: Tz,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    #[serde(default)]
    pub included_tokens: u64,
    /// The policy component (`.wasm`).
    pub policy: PathBuf,
    /// Parameters handed to the policy as JSON.
    pub policy_config: Option<toml::Table>,
    /// A cases file the policy must pass before it is activated.
    pub policy_cases: Option<PathBuf>,
    #[serde(default)]
    pub failure_mode: FailureMode,
    pub deadline_ms: Option<u64>,
    pub memory_limit_mib: Option<u32>,
    pub instances: Option<InstancesSetting>,
    pub max_idle_instances: Option<usize>,
    /// Models the policy may step down to, dearest first, priced for each
    /// call in `request.downgrade-chain`.
    pub policy_downgrade_chain: Option<Vec<String>>,
    /// Model id → application inference profile ARN to send the call to.
    #[serde(default)]
    pub inference_profiles: BTreeMap<String, String>,
    /// Let the policy "downgrade" to a model whose hold costs more than the
    /// requested one's; refused as an invalid verdict otherwise.
    #[serde(default)]
    pub allow_costlier_downgrade: bool,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub access_keys: Vec<AccessKeyConfig>,
}

fn utc() -> Tz {
    Tz::UTC
}

impl TenantConfig {
    pub fn limits(&self) -> TenantLimits {
        TenantLimits {
            budget: self.budget_usd.0,
            period: self.period,
            time_zone: self.time_zone,
            rpm: self.rpm,
            tpm: self.tpm,
            included_tokens: self.included_tokens,
        }
    }

    pub fn credentials(&self) -> CredentialsConfig {
        CredentialsConfig {
            api_keys: self.api_keys.clone(),
            access_keys: self.access_keys.clone(),
        }
    }

    /// The policy settings, as a policy directory file would give them.
    pub fn policy_file(&self) -> Result<crate::registry::policy_dir::TenantPolicyFile, String> {
        Ok(crate::registry::policy_dir::TenantPolicyFile {
            policy: self.policy.clone(),
            cases: self.policy_cases.clone(),
            config: self.policy_config.clone(),
            failure_mode: Some(self.failure_mode),
            deadline_ms: self.deadline_ms,
            memory_limit_mib: self.memory_limit_mib,
            instances: self.instances,
            max_idle_instances: self.max_idle_instances,
            downgrade_chain: self.policy_downgrade_chain.clone(),
        })
    }
}

/// A configuration that cannot be used; the gateway does not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {key}{line}: {problem}", line = line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Invalid {
        origin: String,
        key: String,
        line: Option<usize>,
        problem: String,
    },
}

impl Config {
    /// Reads a file and applies the environment's overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        config.origin = path.to_path_buf();
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let invalid = |key: String, err: &toml::de::Error| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            line: err.span().map(|span| crate::toml_error::line_of(text, span.start)),
            problem: err.message().trim().to_owned(),
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|e| invalid("(syntax)".into(), &e))?;
        let config: Config = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| invalid(crate::toml_error::key_path(e.path()), e.inner()))?;
        Ok(config)
    }

    /// Applies `TOLLGATE_*` overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let origin = self.origin.display().to_string();
        let bad = |name: &str, problem: String| ConfigError::Invalid {
            origin: origin.clone(),
            key: format!("(environment {name})"),
            line: None,
            problem,
        };
        if let Some(v) = var("TOLLGATE_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = var("TOLLGATE_ADMIN_TOKEN") {
            self.server.admin_token = Some(v);
        }
        if let Some(v) = var("TOLLGATE_PLAIN_HTTP") {
            self.server.plain_http = match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                other => return Err(bad("TOLLGATE_PLAIN_HTTP", format!("{other:?} is not true or false"))),
            };
        }
        if let Some(v) = var("TOLLGATE_UPSTREAM") {
            self.upstream.kind = match v.as_str() {
                "mock" => UpstreamKind::Mock,
                "bedrock" => UpstreamKind::Bedrock,
                other => return Err(bad("TOLLGATE_UPSTREAM", format!("{other:?} is not mock or bedrock"))),
            };
        }
        if let Some(v) = var("TOLLGATE_BEDROCK_REGION") {
            self.upstream.bedrock.region = Some(v);
        }
        if let Some(v) = var("TOLLGATE_BEDROCK_ENDPOINT") {
            self.upstream.bedrock.endpoint = Some(v);
        }
        if let Some(v) = var("TOLLGATE_LEDGER_PATH") {
            self.ledger.path = PathBuf::from(v);
        }
        if let Some(v) = var("TOLLGATE_INVOCATION_LOG") {
            self.log.invocations = PathBuf::from(v);
        }
        Ok(())
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let origin = self.origin.display().to_string();
        let invalid = |key: String, problem: String| ConfigError::Invalid {
            origin: origin.clone(),
            key,
            line: None,
            problem,
        };
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "server.listen".into(),
                format!("{:?} is not an address like 127.0.0.1:8443", self.server.listen),
            ));
        }
        match self.server.admin_listen.parse::<std::net::SocketAddr>() {
            Err(_) => {
                return Err(invalid(
                    "server.admin-listen".into(),
                    format!("{:?} is not an address like 127.0.0.1:8444", self.server.admin_listen),
                ));
            }
            Ok(admin) if admin.port() != 0 && self.server.listen.parse().ok() == Some(admin) => {
                return Err(invalid(
                    "server.admin-listen".into(),
                    "it is the same address as server.listen; the operator listener needs its own (tenants must \
                     not reach the admin API or metrics)"
                        .into(),
                ));
            }
            Ok(_) => {}
        }
        if !self.server.plain_http && (self.server.tls_cert.is_none() || self.server.tls_key.is_none()) {
            return Err(invalid(
                "server".into(),
                "HTTPS needs tls-cert and tls-key (PEM files); or set plain-http = true to serve plain HTTP on a \
                 trusted network"
                    .into(),
            ));
        }
        if let Some(token) = &self.server.admin_token
            && token.chars().count() < 16
        {
            return Err(invalid(
                "server.admin-token".into(),
                "the admin token must have at least 16 characters".into(),
            ));
        }
        // A hold must outlive its call, or the call would be charged after its
        // hold went back to the budget (still charged, but past the gate).
        let upstream = self.upstream.effective();
        let needed = upstream.longest_call_ms().saturating_add(SETTLE_MARGIN_MS);
        if self.ledger.reservation_ttl_ms < needed {
            return Err(invalid(
                "ledger.reservation-ttl-ms".into(),
                format!(
                    "{} ms is shorter than the longest call the upstream settings allow plus {} s to settle \
                     ({needed} ms: max-attempts × (connect-timeout-ms + timeout-ms), the backoffs between, and \
                     stream-max-ms). A hold must outlive its call: raise reservation-ttl-ms to at least {needed}, or \
                     lower those [upstream.bedrock] settings",
                    self.ledger.reservation_ttl_ms,
                    SETTLE_MARGIN_MS / 1000
                ),
            ));
        }
        self.ledger
            .check()
            .map_err(|(key, problem)| invalid(key.into(), problem))?;
        if !policy_dir::DEBOUNCE_MS.contains(&self.policy_dir.debounce_ms) {
            return Err(invalid(
                "policy-dir.debounce-ms".into(),
                format!(
                    "{} is outside {} to {} ms",
                    self.policy_dir.debounce_ms,
                    policy_dir::DEBOUNCE_MS.start(),
                    policy_dir::DEBOUNCE_MS.end()
                ),
            ));
        }
        for (key, value, max) in [
            ("server.max-connections", self.server.max_connections as u64, 1_000_000),
            ("server.max-in-flight", self.server.max_in_flight as u64, 1_000_000),
            (
                "server.header-read-timeout-ms",
                self.server.header_read_timeout_ms,
                3_600_000,
            ),
            (
                "server.body-read-timeout-ms",
                self.server.body_read_timeout_ms,
                3_600_000,
            ),
            (
                "server.tls-handshake-timeout-ms",
                self.server.tls_handshake_timeout_ms,
                600_000,
            ),
            ("server.write-timeout-ms", self.server.write_timeout_ms, 3_600_000),
        ] {
            if !(1..=max).contains(&value) {
                return Err(invalid(key.into(), format!("{value} is outside 1-{max}")));
            }
        }
        if !(1..=60_000).contains(&self.engine.queue_timeout_ms) {
            return Err(invalid(
                "engine.queue-timeout-ms".into(),
                format!(
                    "{} is outside 1-60000; a call waits at most this long for a decision thread",
                    self.engine.queue_timeout_ms
                ),
            ));
        }
        if self.engine.decision_threads > 1024 {
            return Err(invalid(
                "engine.decision-threads".into(),
                format!(
                    "{} threads is too many; use 0 for one per core, or at most 1024",
                    self.engine.decision_threads
                ),
            ));
        }
        if !(1..=MAX_COOLDOWN_MS).contains(&self.engine.breaker_cooldown_ms) {
            return Err(invalid(
                "engine.breaker-cooldown-ms".into(),
                format!("{} is outside 1-{MAX_COOLDOWN_MS}", self.engine.breaker_cooldown_ms),
            ));
        }
        if !(1..=1000).contains(&self.estimator.input_scale_percent) {
            return Err(invalid(
                "estimator.input-scale-percent".into(),
                format!(
                    "{} is outside 1-1000; 100 uses the estimates as they are",
                    self.estimator.input_scale_percent
                ),
            ));
        }
        if let Err(e) = self.alerts.validate() {
            return Err(invalid("alerts".into(), e.to_string()));
        }
        if self.tenants.is_empty() {
            return Err(invalid(
                "tenants".into(),
                "no tenants: add at least one [tenants.<id>] with a budget-usd, a policy and an api key".into(),
            ));
        }
        let mut owners = std::collections::HashMap::new();
        for (id, tenant) in &self.tenants {
            let key = |field: &str| format!("tenants.{id}.{field}");
            TenantId::new(id).map_err(|e| invalid(format!("tenants.{id}"), e.to_string()))?;
            if tenant.api_keys.is_empty() && tenant.access_keys.is_empty() {
                return Err(invalid(
                    key("api-keys"),
                    "the tenant has no credential: add an api-keys entry (key-sha256) or an access-keys entry".into(),
                ));
            }
            for (model, arn) in &tenant.inference_profiles {
                if !crate::pricing::is_application_profile(arn) {
                    return Err(invalid(
                        key(&format!("inference-profiles.\"{model}\"")),
                        format!("{arn:?} is not an application inference profile ARN"),
                    ));
                }
                // A profile's cost allocation and quotas are one tenant's: sharing would bill one for another.
                if let Some(other) = owners.insert(arn.as_str(), id.as_str())
                    && other != id.as_str()
                {
                    return Err(invalid(
                        key(&format!("inference-profiles.\"{model}\"")),
                        format!(
                            "{arn:?} is also tenant {other}'s profile; an application inference profile belongs to \
                             one tenant, so create one per tenant"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            return path.to_path_buf();
        }
        self.origin.parent().unwrap_or(Path::new(".")).join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[server]
plain-http = true

[tenants.acme]
budget-usd = "250.50"
policy = "budget_guard.wasm"
[[tenants.acme.api-keys]]
key-sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
"#;

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let config = Config::parse(MINIMAL, "tollgate.toml").expect("valid");
        config.validate().expect("valid");
        assert_eq!(config.upstream.kind, UpstreamKind::Mock);
        assert_eq!(config.ledger.store, StoreKind::Durable);
        let acme = &config.tenants["acme"];
        assert_eq!(acme.budget_usd.0, NanoUsd(250_500_000_000));
        assert_eq!(acme.limits().period, Period::Monthly);
        assert_eq!(acme.failure_mode, FailureMode::Closed);
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_line() {
        let text = MINIMAL.replace("budget-usd = \"250.50\"", "budget-usd = 250.5");
        let err = Config::parse(&text, "tollgate.toml").expect_err("float").to_string();
        assert!(err.contains("tollgate.toml"), "{err}");
        assert!(err.contains("tenants.acme.budget-usd"), "{err}");
        assert!(err.contains("float"), "{err}");
        assert!(err.contains("line 6"), "{err}");

        let text = MINIMAL.replace("[server]", "[server]\nlisten-on = 1");
        let err = Config::parse(&text, "tollgate.toml").expect_err("typo").to_string();
        assert!(err.contains("listen-on"), "{err}");

        let text = MINIMAL.replace("plain-http = true", "");
        let config = Config::parse(&text, "tollgate.toml").expect("parses");
        let err = config.validate().expect_err("no tls").to_string();
        assert!(err.contains("tls-cert"), "{err}");

        let text = format!("{MINIMAL}\n[ledger]\ncommit = \"write\"\ncheckpoint-ms = 0\n");
        let config = Config::parse(&text, "tollgate.toml").expect("parses");
        let err = config.validate().expect_err("checkpoint out of bounds").to_string();
        assert!(
            err.contains("ledger.checkpoint-ms") && err.contains("1 to 60000"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = Config::parse(MINIMAL, "tollgate.toml").expect("valid");
        let env = |name: &str| match name {
            "TOLLGATE_LISTEN" => Some("127.0.0.1:0".to_owned()),
            "TOLLGATE_UPSTREAM" => Some("bedrock".to_owned()),
            "TOLLGATE_BEDROCK_REGION" => Some("eu-west-1".to_owned()),
            _ => None,
        };
        config.apply_env(env).expect("applies");
        assert_eq!(config.server.listen, "127.0.0.1:0");
        assert_eq!(config.upstream.kind, UpstreamKind::Bedrock);
        assert_eq!(config.upstream.bedrock.region.as_deref(), Some("eu-west-1"));
        let err = config
            .apply_env(|n| (n == "TOLLGATE_UPSTREAM").then(|| "azure".to_owned()))
            .expect_err("bad kind")
            .to_string();
        assert!(err.contains("TOLLGATE_UPSTREAM"), "{err}");
    }

    #[test]
    fn tenants_need_credentials_and_real_profile_arns() {
        let text = MINIMAL.replace(
            "[[tenants.acme.api-keys]]\nkey-sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"",
            "",
        );
        let err = Config::parse(&text, "t.toml")
            .expect("parses")
            .validate()
            .expect_err("no key");
        assert!(err.to_string().contains("tenants.acme.api-keys"), "{err}");
        let text = format!("{MINIMAL}[tenants.acme.inference-profiles]\n\"amazon.nova-micro-v1:0\" = \"nova\"\n");
        let err = Config::parse(&text, "t.toml")
            .expect("parses")
            .validate()
            .expect_err("bad arn");
        assert!(err.to_string().contains("inference-profiles"), "{err}");

        // One profile, two tenants: refused, since AWS bills a profile to one owner.
        let arn = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/shared";
        let text = format!(
            "{MINIMAL}[tenants.acme.inference-profiles]\n\"amazon.nova-micro-v1:0\" = {arn:?}\n\
             [tenants.globex]\nbudget-usd = \"1\"\npolicy = \"p.wasm\"\n\
             [[tenants.globex.api-keys]]\nkey-sha256 = \"{}\"\n\
             [tenants.globex.inference-profiles]\n\"amazon.nova-lite-v1:0\" = {arn:?}\n",
            "0".repeat(64)
        );
        let err = Config::parse(&text, "t.toml")
            .expect("parses")
            .validate()
            .expect_err("shared profile");
        assert!(err.to_string().contains("belongs to one tenant"), "{err}");
    }
}

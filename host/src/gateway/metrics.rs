//! Prometheus metrics of the gateway, served at `/metrics` in the text
//! exposition format.
//!
//! Label sets stay bounded: tenants and models come from configuration and
//! the price catalog (an unknown model is refused before it is counted),
//! verdicts and operations are fixed lists.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantVerdict {
    pub tenant: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantModelKind {
    pub tenant: String,
    pub model: String,
    /// `input`, `output`, `cache-read` or `cache-write`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantFailure {
    pub tenant: String,
    /// A `FailureKind` name: timeout, trap, capacity, circuit-open, ...
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub operation: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowPair {
    pub tenant: String,
    pub active_version: String,
    pub shadow_version: String,
    /// Verdict names: admit, downgrade, throttle, reject.
    pub active: String,
    pub shadow: String,
}

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<TenantVerdict, Counter>,
    pub tokens: Family<TenantModelKind, Counter>,
    pub cost_nano_usd: Family<TenantLabel, Counter>,
    pub decision_seconds: Histogram,
    pub upstream_seconds: Family<OperationLabel, Histogram>,
    pub responses: Family<StatusLabel, Counter>,
    pub alert_level: Family<TenantLabel, Gauge>,
    pub aggregate_alert_level: Gauge,
    pub policy_failures: Family<TenantFailure, Counter>,
    pub connections_refused: Counter,
    pub calls_shed: Counter,
    pub shadow_disagreements: Family<ShadowPair, Counter>,
    pub shadow_decisions: Family<TenantLabel, Counter>,
    pub shadow_skipped: Family<TenantLabel, Counter>,
    pub policy_dir_errors: Family<TenantLabel, Counter>,
    /// Serialises encoding; the metrics themselves are lock-free.
    encode_lock: Mutex<()>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let decisions = Family::<TenantVerdict, Counter>::default();
        registry.register(
            "decisions",
            "Policy decisions by tenant and verdict (admit, downgrade, throttle, reject)",
            decisions.clone(),
        );
        let tokens = Family::<TenantModelKind, Counter>::default();
        registry.register(
            "tokens",
            "Tokens charged, by tenant, served model and kind",
            tokens.clone(),
        );
        let cost_nano_usd = Family::<TenantLabel, Counter>::default();
        registry.register(
            "cost_nano_usd",
            "Money charged to the tenant's ledger, in nano-dollars",
            cost_nano_usd.clone(),
        );
        // 1 µs .. ~16 ms: policy decisions are microseconds; the deadline is milliseconds.
        let decision_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 15));
        registry.register(
            "policy_decision_seconds",
            "Wall time of one policy decision, instantiation included",
            decision_seconds.clone(),
        );
        let upstream_seconds = Family::<OperationLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1e-3, 2.0, 17))
        });
        registry.register(
            "upstream_seconds",
            "Time until the upstream answered (Converse: whole reply; stream: headers)",
            upstream_seconds.clone(),
        );
        let responses = Family::<StatusLabel, Counter>::default();
        registry.register(
            "responses",
            "Responses sent to callers by operation and HTTP status",
            responses.clone(),
        );
        let alert_level = Family::<TenantLabel, Gauge>::default();
        registry.register(
            "alert_level",
            "The tenant's alert level: 0 green, 1 yellow, 2 orange, 3 red",
            alert_level.clone(),
        );
        let aggregate_alert_level = Gauge::default();
        registry.register(
            "aggregate_alert_level",
            "The alert level across all tenants: 0 green, 1 yellow, 2 orange, 3 red",
            aggregate_alert_level.clone(),
        );
        let policy_failures = Family::<TenantFailure, Counter>::default();
        registry.register(
            "policy_failures",
            "Decisions made by the tenant's failure mode, by failure kind (timeout, trap, capacity, circuit-open, ...)",
            policy_failures.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed as soon as they were accepted: max-connections were open",
            connections_refused.clone(),
        );
        let calls_shed = Counter::default();
        registry.register(
            "calls_shed",
            "Model calls refused with a 503 because max-in-flight calls were being admitted",
            calls_shed.clone(),
        );
        // Versions in labels stay bounded: a tenant keeps at most 16.
        let shadow_disagreements = Family::<ShadowPair, Counter>::default();
        registry.register(
            "shadow_disagreements",
            "Calls where the shadow policy's verdict differed from the enforced one, by tenant, versions and verdict pair",
            shadow_disagreements.clone(),
        );
        let shadow_decisions = Family::<TenantLabel, Counter>::default();
        registry.register(
            "shadow_decisions",
            "Calls a shadow policy decided beside the active one",
            shadow_decisions.clone(),
        );
        let shadow_skipped = Family::<TenantLabel, Counter>::default();
        registry.register(
            "shadow_skipped",
            "Calls the shadow policy was not run for: no spare capacity at the time",
            shadow_skipped.clone(),
        );
        // Labelled by file name, clipped; files come from the operator's own directory.
        let policy_dir_errors = Family::<TenantLabel, Counter>::default();
        registry.register(
            "policy_dir_errors",
            "Policy files of the watched directory that were refused; the running version kept deciding",
            policy_dir_errors.clone(),
        );
        Metrics {
            registry,
            policy_dir_errors,
            shadow_disagreements,
            shadow_decisions,
            shadow_skipped,
            policy_failures,
            connections_refused,
            calls_shed,
            decisions,
            tokens,
            cost_nano_usd,
            decision_seconds,
            upstream_seconds,
            responses,
            alert_level,
            aggregate_alert_level,
            encode_lock: Mutex::new(()),
        }
    }

    /// Exports the invocation log's count of calls waiting for room in its
    /// queue: above zero, the log's disk is not keeping up.
    pub fn register_log_waiting(&mut self, gauge: Gauge) {
        self.registry.register(
            "log_waiting_calls",
            "Calls waiting for room in the invocation log's queue: above 0, the log's disk is not keeping up",
            gauge,
        );
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let _guard = self
            .encode_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        out
    }

    pub fn tenant_verdict(&self, tenant: &str, verdict: &str) {
        self.decisions
            .get_or_create(&TenantVerdict {
                tenant: tenant.to_owned(),
                verdict: verdict.to_owned(),
            })
            .inc();
    }

    pub fn add_tokens(&self, tenant: &str, model: &str, kind: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        self.tokens
            .get_or_create(&TenantModelKind {
                tenant: tenant.to_owned(),
                model: model.to_owned(),
                kind: kind.to_owned(),
            })
            .inc_by(tokens);
    }

    pub fn add_cost(&self, tenant: &str, nano_usd: u64) {
        self.cost_nano_usd
            .get_or_create(&TenantLabel {
                tenant: tenant.to_owned(),
            })
            .inc_by(nano_usd);
    }

    pub fn response(&self, operation: &str, status: u16) {
        self.responses
            .get_or_create(&StatusLabel {
                operation: operation.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn set_alert(&self, tenant: &str, level: i64, aggregate: i64) {
        self.alert_level
            .get_or_create(&TenantLabel {
                tenant: tenant.to_owned(),
            })
            .set(level);
        self.aggregate_alert_level.set(aggregate);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::new();
        m.tenant_verdict("acme", "admit");
        m.add_tokens("acme", "amazon.nova-micro-v1:0", "input", 12);
        m.add_cost("acme", 420);
        m.decision_seconds.observe(6e-6);
        m.set_alert("acme", 2, 1);
        let text = m.encode();
        for needle in [
            "tollgate_decisions_total{tenant=\"acme\",verdict=\"admit\"} 1",
            "tollgate_tokens_total{tenant=\"acme\",model=\"amazon.nova-micro-v1:0\",kind=\"input\"} 12",
            "tollgate_cost_nano_usd_total{tenant=\"acme\"} 420",
            "tollgate_policy_decision_seconds_count 1",
            "tollgate_alert_level{tenant=\"acme\"} 2",
            "tollgate_aggregate_alert_level 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}

//! `tollgate:policy@0.1.0`: the records that 0.2.0 extended, as 0.1.0
//! defined them. A 0.1.0 component gets the 0.2.0 request and state with the
//! new fields left out; every other type (verdict, plan, window, alert
//! levels) is the same in both versions and shared.

use wasmtime::component::{ComponentType, Lift, Lower};

use super::{AlertLevel, Indicators, Operation, Period, Plan, RateWindow};

/// 0.1.0 `request`: 0.2.0's without tier, latency, cache points and options.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
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
    #[component(name = "worst-case-cost")]
    pub worst_case_cost: u64,
    pub metadata: Vec<(String, String)>,
    #[component(name = "now-ms")]
    pub now_ms: u64,
    pub config: String,
}

/// 0.1.0 `budget`: without the period's days.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct Budget {
    pub limit: u64,
    pub spent: u64,
    pub reserved: u64,
    pub period: Period,
    #[component(name = "period-start-ms")]
    pub period_start_ms: u64,
    #[component(name = "period-end-ms")]
    pub period_end_ms: u64,
}

/// 0.1.0 `tenant-state`: without the local clock and open reservations.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct TenantState {
    pub plan: Plan,
    pub budget: Budget,
    pub indicators: Indicators,
    pub window: RateWindow,
    pub alert: AlertLevel,
    #[component(name = "aggregate-alert")]
    pub aggregate_alert: AlertLevel,
}

/// 0.1.0 `model-price` (of the `host` interface): without 1-hour writes.
#[derive(ComponentType, Lift, Lower, Clone, Copy, Debug, PartialEq, Eq)]
#[component(record)]
pub struct ModelPrice {
    pub input: u64,
    pub output: u64,
    #[component(name = "cache-read")]
    pub cache_read: u64,
    #[component(name = "cache-write")]
    pub cache_write: u64,
}

impl From<&super::Request> for Request {
    fn from(r: &super::Request) -> Self {
        Request {
            request_id: r.request_id.clone(),
            tenant_id: r.tenant_id.clone(),
            user_id: r.user_id.clone(),
            use_case: r.use_case.clone(),
            operation: r.operation,
            model_id: r.model_id.clone(),
            base_model_id: r.base_model_id.clone(),
            estimated_input_tokens: r.estimated_input_tokens,
            max_output_tokens: r.max_output_tokens,
            worst_case_cost: r.worst_case_cost,
            metadata: r.metadata.clone(),
            now_ms: r.now_ms,
            config: r.config.clone(),
        }
    }
}

impl From<&super::TenantState> for TenantState {
    fn from(s: &super::TenantState) -> Self {
        let b = &s.budget;
        TenantState {
            plan: s.plan.clone(),
            budget: Budget {
                limit: b.limit,
                spent: b.spent,
                reserved: b.reserved,
                period: b.period,
                period_start_ms: b.period_start_ms,
                period_end_ms: b.period_end_ms,
            },
            indicators: s.indicators.clone(),
            window: s.window.clone(),
            alert: s.alert,
            aggregate_alert: s.aggregate_alert,
        }
    }
}

impl From<super::ModelPrice> for ModelPrice {
    fn from(p: super::ModelPrice) -> Self {
        ModelPrice {
            input: p.input,
            output: p.output,
            cache_read: p.cache_read,
            cache_write: p.cache_write,
        }
    }
}

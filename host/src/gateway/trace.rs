//! What is known of one call as it goes through the pipeline, and the
//! invocation record it becomes: one record per call, written once.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::invocation_log::{
    Billing, InvocationRecord, Latency, SCHEMA_TYPE, SCHEMA_VERSION, TokenCounts, TollgateFields, timestamp,
};
use crate::contract::{CachePoint, Operation};
use crate::ids::TenantId;
use crate::pricing::{ServedAs, Usage};

/// What is known of a call so far, for its record.
#[derive(Clone)]
pub(super) struct Trace {
    pub(super) tenant: String,
    pub(super) operation: Operation,
    pub(super) request_id: String,
    pub(super) upstream_request_id: Option<String>,
    pub(super) requested_model: String,
    pub(super) model_id: String,
    pub(super) served_model: Option<String>,
    pub(super) decision: String,
    pub(super) reason: String,
    pub(super) policy_version: Option<String>,
    pub(super) policy_failure: Option<String>,
    pub(super) estimated_input_tokens: u64,
    pub(super) max_output_tokens: u64,
    pub(super) cache_points: Vec<CachePoint>,
    pub(super) asked: ServedAs,
    pub(super) reserved_nano_usd: u64,
    pub(super) reservation: Option<u64>,
    pub(super) cost_nano_usd: u64,
    pub(super) charged_from: String,
    pub(super) hold_expired: bool,
    pub(super) usage: Option<Usage>,
    pub(super) billing: Option<Billing>,
    pub(super) billing_note: Option<String>,
    pub(super) status: u16,
    pub(super) error_type: Option<String>,
    pub(super) dropped_metadata: Vec<String>,
    pub(super) request_metadata: Map<String, Value>,
    pub(super) user: Option<String>,
    pub(super) use_case: Option<String>,
    pub(super) started: Instant,
    pub(super) started_ms: u64,
    pub(super) decision_us: u64,
    pub(super) gateway_us: u64,
    pub(super) upstream_ms: u64,
    /// Set once the record is written (or handed to the stream pump).
    pub(super) logged: bool,
    /// The shadow policy's decision of this call, when the tenant has one.
    pub(super) shadow: Option<super::shadowing::ShadowSlot>,
}

impl Trace {
    pub(super) fn new(
        tenant: &TenantId,
        operation: Operation,
        model_id: &str,
        request_id: String,
        started: Instant,
    ) -> Trace {
        Trace {
            tenant: tenant.as_str().to_owned(),
            operation,
            request_id,
            upstream_request_id: None,
            requested_model: model_id.to_owned(),
            model_id: model_id.to_owned(),
            served_model: None,
            decision: "invalid".into(),
            reason: String::new(),
            policy_version: None,
            policy_failure: None,
            estimated_input_tokens: 0,
            max_output_tokens: 0,
            cache_points: Vec::new(),
            asked: ServedAs::default(),
            reserved_nano_usd: 0,
            reservation: None,
            cost_nano_usd: 0,
            charged_from: "none".into(),
            hold_expired: false,
            usage: None,
            billing: None,
            billing_note: None,
            status: 200,
            error_type: None,
            dropped_metadata: Vec::new(),
            request_metadata: Map::new(),
            user: None,
            use_case: None,
            started,
            started_ms: now_ms(),
            decision_us: 0,
            gateway_us: 0,
            upstream_ms: 0,
            logged: false,
            shadow: None,
        }
    }

    /// The call's record, its text moved out rather than copied: a trace is
    /// recorded once, and is marked logged here.
    pub(super) fn take_record(&mut self) -> InvocationRecord {
        use std::mem::take;
        self.logged = true;
        let usage = self.usage.unwrap_or_default();
        let counted = self.usage.is_some();
        let some = |n: u64| counted.then_some(n);
        InvocationRecord {
            schema_type: SCHEMA_TYPE.into(),
            schema_version: SCHEMA_VERSION.into(),
            timestamp: timestamp(self.started_ms),
            request_id: self
                .upstream_request_id
                .take()
                .unwrap_or_else(|| self.request_id.clone()),
            operation: operation_name(self.operation).into(),
            model_id: take(&mut self.model_id),
            input: TokenCounts {
                input_token_count: some(usage.input_tokens),
                cache_read_input_token_count: some(usage.cache_read_input_tokens),
                // Bedrock's own total: the 5-minute and 1-hour writes together.
                cache_write_input_token_count: some(usage.cache_write_input_tokens),
                ..TokenCounts::default()
            },
            output: TokenCounts {
                output_token_count: some(usage.output_tokens),
                ..TokenCounts::default()
            },
            request_metadata: take(&mut self.request_metadata),
            tollgate: TollgateFields {
                request_id: take(&mut self.request_id),
                tenant: take(&mut self.tenant),
                user: take(&mut self.user),
                use_case: take(&mut self.use_case),
                decision: take(&mut self.decision),
                reason: take(&mut self.reason),
                policy_version: take(&mut self.policy_version),
                policy_failure: take(&mut self.policy_failure),
                requested_model_id: take(&mut self.requested_model),
                served_model_id: take(&mut self.served_model),
                estimated_input_tokens: self.estimated_input_tokens,
                max_output_tokens: self.max_output_tokens,
                cache_points: take(&mut self.cache_points),
                asked: self.asked,
                reserved_nano_usd: self.reserved_nano_usd,
                reservation: self.reservation,
                cost_nano_usd: self.cost_nano_usd,
                charged_from: take(&mut self.charged_from),
                hold_expired: self.hold_expired,
                status: self.status,
                error_type: take(&mut self.error_type),
                dropped_metadata: take(&mut self.dropped_metadata),
                billing: self.billing.take().map(|b| Billing {
                    usage: self.usage.map(Into::into),
                    ..b
                }),
                billing_note: take(&mut self.billing_note),
                shadow: None,
                latency: Latency {
                    decision_us: self.decision_us,
                    gateway_us: self.gateway_us,
                    upstream_ms: self.upstream_ms,
                    total_ms: millis(self.started.elapsed()),
                },
            },
        }
    }
}

pub fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Converse => "Converse",
        Operation::ConverseStream => "ConverseStream",
    }
}

pub(crate) use crate::wall_clock::now_ms;

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

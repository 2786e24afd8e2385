//! The request path, as a library: one [`Gateway`] drives each Converse or
//! ConverseStream call through authenticate → parse → estimate → snapshot
//! the tenant's state → run the tenant's policy → apply the verdict →
//! reserve → forward → settle or release → log.
//!
//! Invariants:
//! * The tenant comes from the credential only; nothing in the body selects it.
//! * Nothing reaches the upstream without an open reservation for its worst
//!   case, so concurrent calls cannot overshoot a budget.
//! * Every reservation ends settled or released exactly once: from the
//!   response's usage when it has one; otherwise (a stream cut by the client
//!   or the upstream, a reply without usage) the hold itself is charged, so a
//!   call that may have cost money is never free.
//! * The ledger is written, and the invocation record handed to the log's
//!   writer thread, before the caller sees the end of its answer (for a
//!   stream: before the final metadata frame). `/admin/idle` and a clean
//!   shutdown wait until the records are on disk.
//! * A call runs in a task of its own, so the caller going away never stops
//!   a call the upstream may be running: it is settled and logged all the
//!   same ([`super::settlement`]; a stream by [`super::stream_pump`]).
//! * Policies run on the decision pool (`registry::pool`): a share of its
//!   threads per tenant, heavy versions on a low-priority lane, and light
//!   versions with short deadlines inline. A deadline measures the policy,
//!   not a queue.
//!
//! The HTTP layer (`server`) only reads bodies and maps responses;
//! a Rust service can call [`Gateway::call`] in-process instead.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use serde_json::Value;
use tokio::sync::mpsc;

use super::directory::Directory;
use super::invocation_log::InvocationLog;
use super::metadata::{self, TollgatePairs};
use super::metrics::Metrics;
use super::refusal::{ledger_unreadable, reject, reserve_refused, upstream_failed};
use super::request_body::{parse_body, set_max_tokens};
pub use super::settlement::GatewayAccounting;
use super::settlement::{CallBasis, Hold, Settlement};
use super::shadowing::ShadowRunner;
use super::stream_pump::{StreamPump, caller_frames};
use super::trace::{Trace, micros, millis, now_ms, operation_name};
use super::verdict_check::{OwnedVerdictCheck, VerdictCheck};
use crate::contract::{Action, Operation, Request};
use crate::estimate::{Estimator, input_token_ceiling};
use crate::ids::{ModelId, TenantId};
use crate::ledger::ReserveRequest;
use crate::pricing::{Catalog, Metered, Rates, ServedAs};
use crate::registry::{DecisionPool, Registry};
use crate::upstream::bedrock::{Upstream, UpstreamBody, status_proves_not_run};
use crate::upstream::error::BedrockError;

/// Response header naming the model that served the call.
pub const SERVED_MODEL_HEADER: &str = "x-tollgate-served-model";
/// Response header with the verdict.
pub const DECISION_HEADER: &str = "x-tollgate-decision";
/// Response header with the deciding policy version.
pub const POLICY_VERSION_HEADER: &str = "x-tollgate-policy-version";
/// Response header with tollgate's request id.
pub const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";

/// Shadow decisions that may wait for the shadow thread; more are skipped.
const SHADOW_QUEUE: usize = 256;

/// Caller metadata keys read as the end user, first match wins.
const USER_KEYS: [&str; 3] = ["user", "user-id", "userId"];
/// Caller metadata keys read as the use case, first match wins.
const USE_CASE_KEYS: [&str; 3] = ["use-case", "useCase", "use_case"];

/// What the gateway knows of a tenant besides its credentials, policy and limits.
#[derive(Debug, Clone, Default)]
pub struct TenantProfile {
    /// Plan tier handed to the policy (`tenant-state.plan.tier`).
    pub tier: String,
    /// Model id → the tenant's application inference profile ARN.
    pub inference_profiles: HashMap<String, String>,
    /// Whether the policy may "downgrade" to a model whose hold costs more.
    pub allow_costlier_downgrade: bool,
    /// Cases every new version of the tenant's policy must pass (its
    /// configured `policy-cases`), unless an upload brings its own.
    pub policy_cases: Option<Arc<crate::registry::cases::CasesFile>>,
    /// Calls are refused; keys and books are kept.
    pub disabled: bool,
}

impl TenantProfile {
    /// Whether the tenant may name `model_id`: any model or system profile,
    /// but of application inference profiles only its own, since AWS bills
    /// and throttles a profile as its owner's.
    pub fn may_name(&self, model_id: &str) -> bool {
        !crate::pricing::is_application_profile(model_id) || self.inference_profiles.values().any(|arn| arn == model_id)
    }
}

/// Everything the request path needs; see [`Gateway::new`].
pub struct GatewayParts {
    /// Tenants' profiles and credentials.
    pub directory: Arc<Directory>,
    pub registry: Arc<Registry>,
    /// The registry's changes, kept across restarts.
    pub lifecycle: Arc<super::lifecycle::PolicyLifecycle>,
    /// Where policies run: decision threads, a share per tenant.
    pub pool: DecisionPool,
    pub accounting: Arc<GatewayAccounting>,
    pub catalog: Arc<Catalog>,
    pub estimator: Arc<Estimator>,
    pub upstream: Arc<Upstream>,
    pub log: Option<Arc<InvocationLog>>,
    pub metrics: Arc<Metrics>,
}

/// One call as it arrived, after authentication.
#[derive(Debug, Clone)]
pub struct Call {
    pub operation: Operation,
    /// The model id from the path, percent-decoded.
    pub model_id: String,
    /// The JSON body, as sent.
    pub body: Bytes,
}

/// The answer to a call that got past validation: the upstream's reply, or
/// its error passed through.
pub struct CallResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: CallBody,
}

pub enum CallBody {
    Full(Bytes),
    /// Event-stream frames as they arrive.
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>),
}

impl CallResponse {
    /// The answer as an HTTP response with `body` made from the call's:
    /// a successful ConverseStream is an event stream, anything else JSON.
    pub fn into_http<B>(self, operation: Operation, body: impl FnOnce(CallBody) -> B) -> http::Response<B> {
        let mut out = http::Response::new(body(self.body));
        *out.status_mut() = self.status;
        *out.headers_mut() = self.headers;
        let headers = out.headers_mut();
        if operation == Operation::ConverseStream && self.status.is_success() {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(crate::upstream::eventstream::CONTENT_TYPE),
            );
        } else if !headers.contains_key(http::header::CONTENT_TYPE) {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        out
    }
}

/// The gateway service. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    parts: GatewayParts,
    next_request: AtomicU64,
    settlement: Arc<Settlement>,
    shadows: ShadowRunner,
    /// What the watched policy directory last did, for the admin API.
    policy_watch: Arc<super::policy_watch::WatchStatus>,
    /// Distinguishes request ids across restarts.
    boot: u64,
}

impl Gateway {
    pub fn new(parts: GatewayParts) -> Gateway {
        let boot = now_ms();
        Gateway {
            inner: Arc::new(Inner {
                settlement: Arc::new(Settlement::new(
                    Arc::clone(&parts.catalog),
                    Arc::clone(&parts.estimator),
                    Arc::clone(&parts.metrics),
                    parts.log.clone(),
                )),
                shadows: ShadowRunner::new(SHADOW_QUEUE),
                policy_watch: Arc::default(),
                parts,
                next_request: AtomicU64::new(1),
                boot,
            }),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.parts.registry
    }

    /// What the watched policy directory last did with each file.
    pub fn policy_watch(&self) -> &Arc<super::policy_watch::WatchStatus> {
        &self.inner.policy_watch
    }

    pub fn lifecycle(&self) -> &Arc<super::lifecycle::PolicyLifecycle> {
        &self.inner.parts.lifecycle
    }

    pub fn accounting(&self) -> &Arc<GatewayAccounting> {
        &self.inner.parts.accounting
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.parts.metrics
    }

    /// Recent usage per tenant, minute by minute, for the dashboard.
    pub fn usage_series(&self) -> &Arc<super::usage_series::UsageSeries> {
        &self.inner.settlement.series
    }

    /// Charges the holds of calls whose gateway stopped during them (this
    /// one, before it restarted, or a replica that died), and logs each;
    /// the number charged. Run at assembly, before calls are admitted, and
    /// by [`Gateway::upkeep`] whenever the store adopts more.
    pub async fn charge_restored_holds(&self) -> usize {
        super::restored::charge(&self.inner.parts.accounting, &self.inner.settlement).await
    }

    /// Resolves once every record written so far is on disk.
    pub async fn flush_log(&self) {
        if let Some(log) = &self.inner.parts.log {
            log.flush().await;
        }
    }

    /// For a shutdown: flushes the log for up to `wait`, then prints what
    /// the disk did not take on standard error. `None` when the disk took
    /// every record, else the number printed.
    pub async fn close_log(&self, wait: std::time::Duration) -> Option<usize> {
        match &self.inner.parts.log {
            Some(log) => log.close(wait).await,
            None => None,
        }
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.inner.parts.upstream
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.inner.parts.catalog
    }

    /// Every tenant, sorted.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.inner.parts.directory.tenants()
    }

    pub fn profile(&self, tenant: &TenantId) -> Option<Arc<TenantProfile>> {
        self.inner.parts.directory.profile(tenant)
    }

    /// The tenants and their credentials, changed at runtime by the admin API.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.inner.parts.directory
    }

    /// Calls started and not yet charged and logged (streams still open included).
    pub fn in_flight(&self) -> usize {
        self.inner.settlement.in_flight()
    }

    /// Resolves once no call is in flight: every started call has been
    /// settled or released and logged. For draining and for tests.
    pub async fn idle(&self) {
        self.inner.settlement.idle().await
    }

    /// Step 1: the tenant, from the credential alone.
    /// Checks the credential from the headers alone, before the body is read;
    /// see [`Credentials::precheck`](super::auth::Credentials::precheck).
    pub fn precheck(&self, headers: &HeaderMap, uri: &Uri) -> Result<(), BedrockError> {
        self.inner
            .parts
            .directory
            .entries()
            .credentials
            .precheck(headers, uri)
            .map_err(|e| BedrockError::new(e.status(), e.error_type(), e.to_string()))
    }

    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        body: &[u8],
    ) -> Result<TenantId, BedrockError> {
        self.inner
            .parts
            .directory
            .entries()
            .credentials
            .authenticate(headers, method, uri, body)
            .map_err(|e| BedrockError::new(e.status(), e.error_type(), e.to_string()))
    }

    /// Steps 2–10 for an authenticated tenant. An `Err` is tollgate's own
    /// answer (a refused request or a verdict); upstream errors come back as
    /// a [`CallResponse`] with their status, as Bedrock sent them.
    ///
    /// A caller that goes away (a closed connection, a dropped future) does
    /// not stop the call: it goes on in a task of its own
    /// ([`super::detach`]), so a call the upstream ran is still settled from
    /// its usage, logged, and counted out.
    pub async fn call(&self, tenant: &TenantId, call: Call) -> Result<CallResponse, BedrockError> {
        let started = Instant::now();
        let request_id = format!(
            "tg-{:08x}-{:012x}",
            self.inner.boot & 0xffff_ffff,
            self.inner.next_request.fetch_add(1, Ordering::Relaxed)
        );
        self.inner.settlement.begin();
        let mut trace = Trace::new(tenant, call.operation, &call.model_id, request_id, started);
        let this = self.clone();
        let tenant = tenant.clone();
        let call = super::detach::Detachable::new(async move {
            match this.run(&tenant, call, &mut trace).await {
                Ok(response) => Ok(response),
                Err(err) => {
                    trace.status = err.status.as_u16();
                    trace.error_type = Some(err.error_type.to_owned());
                    if trace.reason.is_empty() {
                        trace.reason = err.message.clone();
                    }
                    this.inner.settlement.finish(&mut trace).await;
                    Err(err)
                }
            }
        });
        call.await.unwrap_or_else(|panic| {
            Err(BedrockError::internal(format!(
                "tollgate hit a bug handling this call ({}); retry it, and report the bug with the gateway's \
                 standard error",
                super::detach::panic_message(panic.as_ref())
            )))
        })
    }

    async fn run(&self, tenant: &TenantId, call: Call, trace: &mut Trace) -> Result<CallResponse, BedrockError> {
        let parts = &self.inner.parts;
        let profile = parts.directory.profile(tenant).ok_or_else(|| {
            BedrockError::access_denied(format!(
                "tenant {tenant} authenticated but has no profile in this gateway; add it under [tenants] in \
                 tollgate.toml"
            ))
        })?;
        let profile = profile.as_ref();
        if profile.disabled {
            return Err(BedrockError::access_denied(format!(
                "tenant {tenant} is disabled; an operator can enable it again (tollgate admin tenant enable {tenant})"
            )));
        }

        // 2. Parse.
        let mut body = parse_body(&call.body)?;
        let caller_pairs = match body.get("requestMetadata") {
            Some(value) => metadata::validate_caller(value)
                .map_err(|e| BedrockError::new(e.status(), e.error_type(), e.to_string()))?,
            None => Vec::new(),
        };
        trace.user = first_pair(&caller_pairs, &USER_KEYS);
        trace.use_case = first_pair(&caller_pairs, &USE_CASE_KEYS);
        let requested = ModelId::new(&call.model_id);
        if !profile.may_name(requested.as_str()) {
            return Err(BedrockError::access_denied(format!(
                "application inference profile {} is not one of tenant {tenant}'s; name a model id or one of the \
                 tenant's own profiles (listed under its inference-profiles in tollgate.toml)",
                crate::text::clip(requested.as_str(), 256)
            )));
        }
        let resolved = parts
            .catalog
            .resolve(requested.as_str())
            .map_err(|e| BedrockError::validation(e.to_string()))?;
        let base_model = resolved.base_model.to_owned();

        // 3. Estimate.
        let body_value = Value::Object(std::mem::take(&mut body));
        let estimate = parts.estimator.estimate(requested.as_str(), &body_value);
        let input_ceiling = input_token_ceiling(call.body.len(), &body_value);
        // A caller's own cap, or the model's maximum looked up on the base model
        // (an application-inference-profile ARN names no family by itself).
        let caller_max_output = body_value
            .get("inferenceConfig")
            .and_then(|c| c.get("maxTokens"))
            .and_then(Value::as_u64);
        let mut max_output = parts.estimator.max_output_tokens(&base_model, &body_value);
        // The tier and latency mode asked for price the hold (and the charge, if the response is silent).
        let asked = ServedAs::read(&body_value, ServedAs::default()).map_err(BedrockError::validation)?;
        trace.asked = asked;
        let Value::Object(taken) = body_value else {
            unreachable!("wrapped an object above")
        };
        body = taken;
        // Each model is resolved once; its rates price both the hold and the ceiling.
        let requested_rates = resolved.rates;
        let hold_at = |rates: &Rates, input_tokens: u64, max_output: u64| {
            rates
                .hold(asked, input_tokens, max_output, estimate.uses_prompt_cache)
                .map_err(BedrockError::validation)
        };
        let requested_worst = hold_at(&requested_rates, estimate.input_tokens, max_output)?;
        trace.estimated_input_tokens = estimate.input_tokens;
        trace.max_output_tokens = max_output;

        // 4. Snapshot.
        let now = now_ms();
        let state = parts
            .accounting
            .tenant_state_async(tenant, &profile.tier, now)
            .await
            .map_err(|e| ledger_unreadable(tenant, e))?;
        parts
            .metrics
            .set_alert(tenant.as_str(), state.alert as i64, state.aggregate_alert as i64);

        // 5. Decide.
        let mut request = Request {
            request_id: trace.request_id.clone(),
            tenant_id: tenant.as_str().to_owned(),
            user_id: trace.user.clone().unwrap_or_default(),
            use_case: trace.use_case.clone().unwrap_or_default(),
            operation: call.operation,
            model_id: requested.as_str().to_owned(),
            base_model_id: base_model,
            estimated_input_tokens: estimate.input_tokens,
            max_output_tokens: max_output,
            worst_case_cost: requested_worst.get(),
            metadata: caller_pairs.clone(),
            now_ms: now,
            ..Request::default()
        };
        // A downgrade must name a model tollgate can price, and no other tenant's profile.
        let check = VerdictCheck {
            profile,
            catalog: &parts.catalog,
            input_tokens: estimate.input_tokens,
            max_output,
            uses_prompt_cache: estimate.uses_prompt_cache,
            asked,
            requested_worst,
        };
        let version = parts.registry.active(tenant).ok_or_else(|| {
            BedrockError::access_denied(format!(
                "tenant {tenant} has no active policy, so tollgate admits none of its calls; give it a policy \
                 (policy = \"...\" under its [tenants] entry, or upload one through the admin API)"
            ))
        })?;
        super::call_options::complete(
            &mut request,
            &body,
            &check,
            &requested_rates,
            &version.settings().downgrade_chain,
        );
        trace.cache_points.clone_from(&request.cache_points);
        // The shadow decides the same call, off this task, once the active verdict is in.
        let shadowed = parts.registry.shadow(tenant).map(|shadow| {
            let mut request = request.clone();
            // The shadow sees its own version's chain, which a settings
            // change of the active version since it was set leaves as it was.
            let chain = &shadow.version().settings().downgrade_chain;
            if *chain != version.settings().downgrade_chain {
                request.downgrade_chain = super::call_options::chain_options(&check, chain);
            }
            (shadow, request, state.clone())
        });
        let decision = parts
            .pool
            .decide(version, request, state.clone(), |v| check.check(v))
            .await;
        if let Some((shadow, request, state)) = shadowed {
            let owned = OwnedVerdictCheck::new(&check, Arc::clone(&parts.catalog));
            trace.shadow = self
                .inner
                .shadows
                .start(shadow, request, state, owned, &decision, &parts.metrics);
        }
        parts.metrics.decision_seconds.observe(decision.elapsed.as_secs_f64());
        if let Some(failure) = &decision.failure {
            parts
                .metrics
                .policy_failures
                .get_or_create(&super::metrics::TenantFailure {
                    tenant: tenant.as_str().to_owned(),
                    kind: failure.kind.as_str().to_owned(),
                })
                .inc();
        }
        let version = decision.version.to_string();
        trace.decision = decision.action.name().to_owned();
        trace.reason = decision.reason.clone();
        trace.policy_version = Some(version.clone());
        trace.policy_failure = decision.failure.as_ref().map(ToString::to_string);
        trace.decision_us = micros(decision.elapsed);

        // 6. Apply the verdict.
        let (served, served_rates) = match &decision.action {
            Action::Admit => (requested.clone(), requested_rates),
            Action::Downgrade(target) => {
                let target = ModelId::new(target);
                // The host check priced it already; this cannot fail, but is no reason to panic.
                let served_base = parts
                    .catalog
                    .resolve(target.as_str())
                    .map_err(|e| BedrockError::validation(e.to_string()))?;
                if caller_max_output.is_none() {
                    // The cheaper model's own maximum, which may be below the requested one's.
                    max_output = max_output.min(parts.estimator.default_max_output(served_base.base_model));
                }
                (target, served_base.rates)
            }
            Action::Throttle(retry_after_ms) => {
                return Err(BedrockError::throttling(
                    format!(
                        "tollgate throttled tenant {tenant} (policy {version}): {}. Retry after {retry_after_ms} ms",
                        decision.reason
                    ),
                    *retry_after_ms,
                ));
            }
            Action::Reject(kind) => {
                return Err(reject(
                    tenant,
                    &version,
                    *kind,
                    &decision.reason,
                    &state,
                    requested_worst.get(),
                ));
            }
        };
        if let Some(cap) = decision.max_output_tokens
            && cap < max_output
        {
            max_output = cap;
        }
        // The upstream may generate no more than was reserved for.
        set_max_tokens(&mut body, max_output);
        let worst = if served == requested && max_output == trace.max_output_tokens {
            requested_worst
        } else {
            hold_at(&served_rates, estimate.input_tokens, max_output)?
        };
        trace.max_output_tokens = max_output;
        if served != requested {
            trace.served_model = Some(served.as_str().to_owned());
        }

        // 7. Reserve: held at the estimate, admitted at the ceiling, so a
        // call whose estimate came in low still settles inside the budget.
        let ceiling = hold_at(&served_rates, input_ceiling, max_output)?;
        let reserved_tokens = estimate.input_tokens.saturating_add(max_output);
        let reservation = parts
            .accounting
            .reserve_async(
                tenant,
                ReserveRequest {
                    cost: worst,
                    tokens: reserved_tokens,
                    now_ms: now,
                    ceiling: Some(ceiling),
                },
            )
            .await
            .map_err(|e| {
                let refused = reserve_refused(tenant, e);
                trace.decision = if refused.status == StatusCode::TOO_MANY_REQUESTS {
                    "throttle".into()
                } else {
                    "reject".into()
                };
                refused
            })?;
        trace.reserved_nano_usd = reservation.cost.get();
        trace.reservation = Some(reservation.id.0);
        let hold = Hold {
            accounting: Arc::clone(&parts.accounting),
            tenant: tenant.clone(),
            id: reservation.id,
            cost: reservation.cost,
            tokens: reserved_tokens,
        };

        // 8. Forward.
        let forward_model = profile
            .inference_profiles
            .get(served.as_str())
            .cloned()
            .unwrap_or_else(|| served.as_str().to_owned());
        trace.model_id = forward_model.clone();
        let merged = metadata::merge(
            &caller_pairs,
            &TollgatePairs {
                tenant,
                decision: decision.action.name(),
                policy_version: Some(&version),
                policy_failure: decision.failure.as_ref().map(|f| f.kind.as_str()),
                original_model: (served != requested).then_some(&requested),
                user: trace.user.as_deref(),
                use_case: trace.use_case.as_deref(),
                verdict: if decision.is_policy_verdict() {
                    &decision.metadata
                } else {
                    &[]
                },
            },
        );
        trace.dropped_metadata = merged
            .dropped
            .iter()
            .map(|d| format!("{}: {}", d.key, d.reason))
            .collect();
        body.insert("requestMetadata".into(), merged.to_json());
        let forward_body = serde_json::to_vec(&body);
        // Moved, not cloned, into the log record once the body is written.
        if let Some(Value::Object(map)) = body.remove("requestMetadata") {
            trace.request_metadata = map;
        }
        let forward_body = match forward_body {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                hold.release(trace).await;
                return Err(BedrockError::internal(format!(
                    "could not serialise the forwarded request: {e}"
                )));
            }
        };
        trace.gateway_us = micros(trace.started.elapsed());
        let upstream_started = Instant::now();
        let sent = parts.upstream.send(call.operation, &forward_model, forward_body).await;
        parts
            .metrics
            .upstream_seconds
            .get_or_create(&super::metrics::OperationLabel {
                operation: operation_name(call.operation).to_owned(),
            })
            .observe(upstream_started.elapsed().as_secs_f64());
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                trace.upstream_ms = millis(upstream_started.elapsed());
                if err.may_have_run() {
                    // Bedrock may have run and billed it: the hold is the charge.
                    trace.reason = format!("{}; {err}", trace.reason);
                    let call_basis = CallBasis {
                        served: served.clone(),
                        raw_estimate: estimate.raw,
                        asked,
                    };
                    self.inner
                        .settlement
                        .charge(&hold, Err(err.to_string()), &call_basis, trace)
                        .await;
                } else {
                    hold.release(trace).await;
                }
                return Err(upstream_failed(&err));
            }
        };
        if let Some(id) = response.headers.get("x-amzn-requestid").and_then(|v| v.to_str().ok()) {
            trace.upstream_request_id = Some(id.to_owned());
        }
        let mut headers = HeaderMap::new();
        for name in ["x-amzn-requestid", "x-amzn-errortype", "retry-after", "content-type"] {
            if let Some(value) = response.headers.get(name) {
                headers.insert(HeaderName::from_static(name), value.clone());
            }
        }
        insert_header(&mut headers, SERVED_MODEL_HEADER, served.as_str());
        let call_basis = CallBasis {
            served: served.clone(),
            raw_estimate: estimate.raw,
            asked,
        };
        insert_header(&mut headers, DECISION_HEADER, decision.action.name());
        insert_header(&mut headers, POLICY_VERSION_HEADER, &version);
        insert_header(&mut headers, REQUEST_ID_HEADER, &trace.request_id);
        trace.status = response.status.as_u16();

        // 9. Settle or release (and 10. log).
        if !response.status.is_success() {
            trace.upstream_ms = millis(upstream_started.elapsed());
            trace.error_type = response
                .headers
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .map(|t| t.split(':').next().unwrap_or(t).to_owned());
            if status_proves_not_run(response.status) {
                hold.release(trace).await;
            } else {
                // A 5xx after the call reached the model may be billed: the hold is the charge.
                let why = format!("the upstream answered {} after the call reached it", response.status);
                self.inner.settlement.charge(&hold, Err(why), &call_basis, trace).await;
            }
            self.inner.settlement.finish(trace).await;
            let body = match response.body {
                UpstreamBody::Full(bytes) => bytes,
                UpstreamBody::Stream(_) => Bytes::new(),
            };
            return Ok(CallResponse {
                status: response.status,
                headers,
                body: CallBody::Full(body),
            });
        }
        match response.body {
            UpstreamBody::Full(bytes) => {
                trace.upstream_ms = millis(upstream_started.elapsed());
                let metered = Metered::from_response_bytes(&bytes, asked);
                self.inner.settlement.charge(&hold, metered, &call_basis, trace).await;
                self.inner.settlement.finish(trace).await;
                Ok(CallResponse {
                    status: response.status,
                    headers,
                    body: CallBody::Full(bytes),
                })
            }
            UpstreamBody::Stream(upstream) => {
                let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(32);
                let pump = StreamPump {
                    settlement: Arc::clone(&self.inner.settlement),
                    hold,
                    call: call_basis,
                    trace: trace.clone(),
                    upstream_started,
                    idle: parts.upstream.stream_idle_timeout(),
                    max: parts.upstream.stream_max(),
                    drain: parts.upstream.stream_drain(),
                    cut: Arc::new(AtomicBool::new(false)),
                };
                // The caller's trace ends here; the pump logs the call when the stream ends.
                trace.logged = true;
                let frames = caller_frames(rx, Arc::clone(&pump.cut));
                tokio::spawn(pump.run(upstream, tx));
                Ok(CallResponse {
                    status: response.status,
                    headers,
                    body: CallBody::Stream(Box::pin(frames)),
                })
            }
        }
    }
}

fn first_pair(pairs: &[(String, String)], keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| pairs.iter().find(|(k, _)| k == key))
        .map(|(_, v)| v.clone())
}

fn insert_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_use_case_come_from_the_callers_pairs() {
        let pairs = vec![
            ("useCase".to_owned(), "support".to_owned()),
            ("user".to_owned(), "u-1".to_owned()),
        ];
        assert_eq!(first_pair(&pairs, &USER_KEYS).as_deref(), Some("u-1"));
        assert_eq!(first_pair(&pairs, &USE_CASE_KEYS).as_deref(), Some("support"));
        assert_eq!(first_pair(&[], &USER_KEYS), None);
    }
}

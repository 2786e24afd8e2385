//! The replayed world: a real in-memory ledger and real alerts, driven by
//! the records' own clock, and the candidate policy deciding on the state
//! that its own earlier decisions left behind.
//!
//! Each recorded call is decided at its start time on the tenant's state
//! then (spent, held, windows, indicators, alert levels, all built by
//! `Accounting::tenant_state`, as the gateway builds them); a call the
//! candidate lets through is held at its worst case like a live call, and
//! charged (or released) at the time the live call ended. Calls in flight
//! at the same time therefore see each other's holds, as they did live.
//!
//! What a let-through call is charged: the recorded cost when it went to
//! the model it went to live; its usage repriced for another model when the
//! candidate picks another; its worst case when the live call never reached
//! a model (refused live), so the log has no usage for it. Refused calls
//! cost nothing.
//!
//! What a record cannot give back, and so is approximated: the books start
//! empty at the log's first record (spend earlier in the period is not in
//! the log); holds are admitted at their estimate, since the prompt's size
//! bound (the live ceiling) is not recorded; a call's metadata is the pairs
//! forwarded live, which include the live verdict's own; and a refused
//! call's user and use case are unknown (nothing was forwarded).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result};
use tollgate_host::accounting::Accounting;
use tollgate_host::alerts::{AlertSettings, Alerts, EventSink};
use tollgate_host::config::Config;
use tollgate_host::gateway::TenantProfile;
use tollgate_host::gateway::invocation_log::BilledTokens;
use tollgate_host::ledger::{Actual, Ledger, LedgerSettings, MemoryStore, ReservationId, ReserveError, ReserveRequest};
use tollgate_host::pricing::{Metered, ServedAs};
use tollgate_host::{Action, NanoUsd, PolicyComponent, PolicyEngine, PolicySettings, PolicyVersion, Request, TenantId};

use super::log_stream::{ChargedFrom, LoggedCall, Verdict};
use super::prices::Prices;

/// Cold first calls (code faulted in, a fresh instance) need room a
/// batch run can give; a policy that loops still fails, just later.
const MIN_DEADLINE_MS: u64 = 50;

/// One tenant as the replay runs it.
struct Tenant {
    id: TenantId,
    profile: TenantProfile,
    version: PolicyVersion,
}

/// What the candidate would have done with one call.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub verdict: Verdict,
    /// The model the call would have gone to (the requested one when refused).
    pub model: String,
    /// Nano-dollars charged.
    pub cost: u64,
    /// The cost is the call's worst case: the log has no usage for it.
    pub estimated: bool,
    pub reason: String,
}

/// Why a record was not replayed.
#[derive(Debug)]
pub enum Skip {
    /// The tenant is in the log but not in the configuration.
    UnknownTenant,
    /// The record's models cannot be priced or the ledger refused it for
    /// another reason than a limit.
    Unreplayable(String),
}

/// A charge due when the live call ended.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at_ms: u64,
    /// Ties keep the log's order.
    seq: u64,
    tenant: usize,
    id: u64,
    /// `None`: the upstream never ran the call; the hold is released.
    charge: Option<(u64, u64)>,
}

/// The ledger, alerts and candidate versions of every configured tenant.
pub struct Simulation {
    accounting: Accounting<MemoryStore>,
    tenants: Vec<Tenant>,
    by_name: HashMap<String, usize>,
    prices: Prices,
    due: BinaryHeap<Reverse<Due>>,
    clock_ms: u64,
    seq: u64,
}

/// How the candidate runs for each tenant.
pub struct CandidateSetup<'a> {
    pub engine: &'a PolicyEngine,
    pub component: Arc<PolicyComponent>,
    pub source: String,
    /// Parameters for every tenant; `None`: each tenant's configured ones.
    pub config: Option<String>,
    /// Only these tenants (empty: all).
    pub only: &'a [String],
}

impl Simulation {
    pub fn new(config: &Config, prices: Prices, candidate: CandidateSetup<'_>) -> Result<Simulation> {
        let ledger = Ledger::new(
            MemoryStore::new(),
            LedgerSettings {
                reservation_ttl_ms: config.ledger.reservation_ttl_ms,
            },
        );
        let mut settings = config.alerts.clone();
        // Past level changes are not news: nothing is delivered.
        settings.webhooks = AlertSettings::default().webhooks;
        let alerts = Alerts::with_sink(settings, EventSink::new()).context("the [alerts] settings")?;
        let accounting = Accounting::new(ledger, Arc::new(alerts));
        let mut tenants = Vec::new();
        let mut by_name = HashMap::new();
        for (name, tenant) in &config.tenants {
            if !candidate.only.is_empty() && !candidate.only.contains(name) {
                continue;
            }
            let id = TenantId::new(name).with_context(|| format!("tenant {name} in the configuration"))?;
            accounting.ledger().set_limits(&id, tenant.limits());
            let file = tenant
                .policy_file()
                .map_err(|e| anyhow::anyhow!("tenant {name}: {e}"))?;
            let configured = file.settings();
            let settings = PolicySettings {
                config: candidate.config.clone().unwrap_or(configured.config),
                deadline_ms: configured.deadline_ms.max(MIN_DEADLINE_MS),
                // One decision at a time: one instance, reused.
                instances: tollgate_host::InstanceStrategy::Pooled { max_idle: 1 },
                ..configured
            };
            let version = PolicyVersion::build(
                candidate.engine,
                Arc::clone(&candidate.component),
                id.clone(),
                1,
                settings,
                candidate.source.clone(),
            )
            .with_context(|| {
                format!(
                    "the candidate cannot run for tenant {name}{}",
                    if candidate.config.is_some() {
                        " with --policy-config"
                    } else {
                        " with the tenant's policy-config (pass --policy-config to give it its own)"
                    }
                )
            })?;
            let profile = TenantProfile {
                tier: tenant.tier.clone(),
                inference_profiles: tenant
                    .inference_profiles
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                allow_costlier_downgrade: tenant.allow_costlier_downgrade,
                ..TenantProfile::default()
            };
            by_name.insert(name.clone(), tenants.len());
            tenants.push(Tenant { id, profile, version });
        }
        Ok(Simulation {
            accounting,
            tenants,
            by_name,
            prices,
            due: BinaryHeap::new(),
            clock_ms: 0,
            seq: 0,
        })
    }

    /// Decides one recorded call as the candidate would have, and books it.
    pub fn step(&mut self, call: &mut LoggedCall) -> Result<Candidate, Skip> {
        let Some(&index) = self.by_name.get(&call.tenant) else {
            return Err(Skip::UnknownTenant);
        };
        // The records' clock; a call logged late never moves time back.
        let now = self.clock_ms.max(call.at_ms);
        self.clock_ms = now;
        self.charge_due(now);

        let tenant = &self.tenants[index];
        let catalog = self
            .prices
            .for_region(call.region.as_deref())
            .map_err(Skip::Unreplayable)?;
        let asked = ServedAs {
            tier: call.service_tier,
            latency: call.latency,
        };
        // Cache points price the hold as the gateway did; logs written before
        // they were kept show caching only in a charged call's usage.
        let caching = !call.cache_points.is_empty() || call.usage.is_some_and(|u| tokens_of(&u) > u.input + u.output);
        let (input, max_output) = (call.estimated_input_tokens, call.max_output_tokens);
        let hold = |model: &str, max_output: u64| {
            catalog
                .hold(model, input, max_output, caching, asked)
                .map_err(|e| Skip::Unreplayable(e.to_string()))
        };
        let requested_worst = hold(&call.requested_model, max_output)?;
        let base_model = catalog
            .resolve(&call.requested_model)
            .map_err(|e| Skip::Unreplayable(e.to_string()))?
            .base_model
            .to_owned();
        let state = self
            .accounting
            .tenant_state(&tenant.id, &tenant.profile.tier, now)
            .map_err(|e| Skip::Unreplayable(e.to_string()))?;

        // The strings move into the request and back, not copied per call.
        let mut request = Request {
            request_id: std::mem::take(&mut call.request_id),
            tenant_id: String::new(),
            user_id: std::mem::take(&mut call.user),
            use_case: std::mem::take(&mut call.use_case),
            operation: call.operation,
            model_id: std::mem::take(&mut call.requested_model),
            base_model_id: base_model,
            estimated_input_tokens: input,
            max_output_tokens: max_output,
            worst_case_cost: requested_worst.get(),
            metadata: std::mem::take(&mut call.metadata),
            now_ms: now,
            service_tier: asked.tier.into(),
            latency_mode: asked.latency.into(),
            cache_points: std::mem::take(&mut call.cache_points),
            ..Request::default()
        };
        // As the gateway prices them.
        request.requested = catalog.option(&request.model_id, input, max_output, caching, asked);
        request.downgrade_chain = (tenant.version.settings().downgrade_chain.iter())
            .map(|model| catalog.option(model, input, max_output, caching, asked))
            .collect();
        // The gateway's own check of a downgrade: a model it can price, no other
        // tenant's profile, and nothing dearer unless the tenant allows it.
        let check = |verdict: &tollgate_host::Verdict| -> Result<(), String> {
            let Action::Downgrade(target) = &verdict.action else {
                return Ok(());
            };
            if !tenant.profile.may_name(target) {
                return Err(format!(
                    "downgrade target {target} is another tenant's inference profile"
                ));
            }
            let worst = catalog
                .hold(target, input, max_output, caching, asked)
                .map_err(|e| format!("downgrade target cannot be priced: {e}"))?;
            if worst > requested_worst && !tenant.profile.allow_costlier_downgrade {
                return Err(format!(
                    "downgrade target {target} would hold {worst} where the requested model holds {requested_worst}"
                ));
            }
            Ok(())
        };
        let decision = tenant.version.decide_checked(&mut request, &state, &check);
        call.request_id = request.request_id;
        call.user = request.user_id;
        call.use_case = request.use_case;
        call.requested_model = request.model_id;
        call.metadata = request.metadata;
        call.cache_points = request.cache_points;

        let (verdict, model) = match decision.action {
            Action::Admit => (Verdict::Admit, call.requested_model.clone()),
            Action::Downgrade(target) => (Verdict::Downgrade, target),
            Action::Throttle(_) => return Ok(refused(Verdict::Throttle, call, decision.reason)),
            Action::Reject(_) => return Ok(refused(Verdict::Reject, call, decision.reason)),
        };
        let max_output = decision.max_output_tokens.map_or(max_output, |cap| cap.min(max_output));
        let worst = if model == call.requested_model && max_output == call.max_output_tokens {
            requested_worst
        } else {
            hold(&model, max_output)?
        };
        let tokens = input.saturating_add(max_output);
        let reservation = match self.accounting.reserve(
            &tenant.id,
            ReserveRequest {
                cost: worst,
                ceiling: None,
                tokens,
                now_ms: now,
            },
        ) {
            Ok(reservation) => reservation,
            Err(e) => {
                let verdict = match &e {
                    ReserveError::Budget { .. } => Verdict::Reject,
                    ReserveError::Tpm { limit, requested, .. } if requested > limit => Verdict::Reject,
                    ReserveError::Tpm { .. } | ReserveError::Rpm { .. } => Verdict::Throttle,
                    ReserveError::UnknownTenant { .. } | ReserveError::Store(_) => {
                        return Err(Skip::Unreplayable(e.to_string()));
                    }
                };
                return Ok(refused(verdict, call, e.to_string()));
            }
        };

        let Held { charge, estimated } = charge_for(call, &model, catalog, asked, worst.get(), tokens)?;
        self.seq += 1;
        self.due.push(Reverse(Due {
            at_ms: call.ends_ms.max(now),
            seq: self.seq,
            tenant: index,
            id: reservation.id.0,
            charge,
        }));
        Ok(Candidate {
            verdict,
            model,
            cost: charge.map_or(0, |(cost, _)| cost),
            estimated,
            reason: decision.reason,
        })
    }

    /// Charges every call still in flight at the end of the log.
    pub fn finish(&mut self) {
        self.charge_due(u64::MAX);
    }

    fn charge_due(&mut self, now: u64) {
        while self.due.peek().is_some_and(|d| d.0.at_ms <= now) {
            let Some(Reverse(due)) = self.due.pop() else { break };
            let tenant = &self.tenants[due.tenant].id;
            let id = ReservationId(due.id);
            // The hold is this replay's own and still open: neither can fail.
            let _ = match due.charge {
                Some((cost, tokens)) => self
                    .accounting
                    .settle(
                        tenant,
                        id,
                        Actual {
                            cost: NanoUsd(cost),
                            tokens,
                        },
                        due.at_ms,
                    )
                    .map(drop),
                None => self.accounting.release(tenant, id, due.at_ms).map(drop),
            };
        }
    }
}

/// What a let-through call is charged when its live call ended.
struct Held {
    /// `(cost, tokens)`; `None`: the upstream never ran it, the hold is released.
    charge: Option<(u64, u64)>,
    /// The cost is the worst case: the call was refused live.
    estimated: bool,
}

/// Charges a call the candidate sends to `model`, from what the record tells.
fn charge_for(
    call: &LoggedCall,
    model: &str,
    catalog: &tollgate_host::Catalog,
    asked: ServedAs,
    worst: u64,
    tokens: u64,
) -> Result<Held, Skip> {
    if !call.verdict.is_some_and(Verdict::forwarded) {
        // Refused live: no model ran it, so the log has no usage to price.
        return Ok(Held {
            charge: Some((worst, tokens)),
            estimated: true,
        });
    }
    let charge = if model == call.served() {
        (call.charged_from != ChargedFrom::Nothing).then(|| (call.cost, recorded_tokens(call, tokens)))
    } else {
        match (call.charged_from, call.usage) {
            (ChargedFrom::Usage, Some(usage)) => {
                let metered = Metered {
                    usage: usage.into(),
                    served_as: asked,
                };
                let charged = catalog
                    .charge(model, &metered)
                    .map_err(|e| Skip::Unreplayable(e.to_string()))?;
                Some((charged.cost.get(), tokens_of(&usage)))
            }
            (ChargedFrom::Nothing, _) => None,
            // The hold was the charge live: it is here too, at this model's prices.
            _ => Some((worst, tokens)),
        }
    };
    Ok(Held {
        charge,
        estimated: false,
    })
}

fn refused(verdict: Verdict, call: &LoggedCall, reason: String) -> Candidate {
    Candidate {
        verdict,
        model: call.requested_model.clone(),
        cost: 0,
        estimated: false,
        reason,
    }
}

/// Every token a call was billed for.
fn tokens_of(usage: &BilledTokens) -> u64 {
    usage
        .input
        .saturating_add(usage.output)
        .saturating_add(usage.cache_read)
        .saturating_add(usage.cache_write_5m)
        .saturating_add(usage.cache_write_1h)
}

/// The tokens the live call was charged with: its usage, else its hold's.
fn recorded_tokens(call: &LoggedCall, held: u64) -> u64 {
    call.usage.as_ref().map_or(held, tokens_of)
}

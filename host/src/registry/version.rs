//! One version of one tenant's policy: a checked component bound to the
//! tenant's parameters, limits and failure mode.
//!
//! Invariants:
//! - Immutable once built; shared behind `Arc` by the registry and by every
//!   decision that started on it, so a hot swap never changes a running call.
//! - Its config has passed the component's `validate-config` before the
//!   version exists.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::contract::{ModelOption, Request, TenantState, Verdict};
use crate::engine::PolicyEngine;
use crate::engine::component::PolicyComponent;
use crate::engine::cpu_deadline::CallStart;
use crate::engine::failure::{FailureKind, PolicyFailure};
use crate::engine::instances::{CallLimits, InstanceStrategy, Instances, Session};
use crate::ids::{MAX_MODEL_ID_BYTES, PolicyVersionId, TenantId};
use crate::money::NanoUsd;
use crate::pricing::hold_cost;

use crate::registry::breaker::{Breaker, BreakerSettings};
use crate::registry::decision::{Decision, FailureMode, check_verdict};

/// The model a new instance's made-up first call asks for.
const REHEARSAL_MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// Quick calls in a row a heavy version needs to be light again.
pub const LIGHT_AGAIN_AFTER: u32 = 64;

/// Models a downgrade chain may list: each is priced on every call.
pub const MAX_DOWNGRADE_CHAIN: usize = 16;

/// Further tries of a test case that timed out on a fresh instance.
const CASE_TIMEOUT_RETRIES: usize = 2;

/// A host's own check of a verdict: `Err` says what is wrong with it.
pub type VerdictCheck<'a> = dyn Fn(&Verdict) -> Result<(), String> + 'a;

/// One run of a policy, before the host's check and the failure mode.
pub(crate) struct Run {
    pub(crate) outcome: Result<Verdict, PolicyFailure>,
    /// Wall time of the policy call(s), instantiation included.
    pub(crate) elapsed: Duration,
    /// False when the call never reached the policy (no capacity); such a
    /// failure is not the policy's and does not count against its breaker.
    pub(crate) ran: bool,
}

impl Run {
    /// This run, decided once more after `first`: its time includes both.
    pub(crate) fn after(mut self, first: &Run) -> Self {
        self.elapsed = self.elapsed.saturating_add(first.elapsed);
        self
    }

    fn timed_out(&self) -> bool {
        self.ran && matches!(&self.outcome, Err(failure) if failure.kind == FailureKind::Timeout)
    }

    pub(crate) fn not_run(failure: PolicyFailure) -> Self {
        Run {
            outcome: Err(failure),
            elapsed: Duration::ZERO,
            ran: false,
        }
    }
}

/// How a tenant runs its policy: parameters, limits and failure mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PolicySettings {
    /// The policy's parameters: a JSON document handed to the policy as
    /// `request.config` ("" for none).
    pub config: String,
    /// What the decision is when the policy fails.
    pub failure_mode: FailureMode,
    /// How long one decision may run, in milliseconds of its CPU time
    /// (1-1000); the wall clock is capped at twice that, or 50 ms more
    /// (`engine::cpu_deadline`).
    pub deadline_ms: u64,
    /// Linear memory cap per instance, in MiB.
    pub memory_limit_mib: u32,
    /// Fresh or pooled instances.
    pub instances: InstanceStrategy,
    /// Models the policy may step down to, dearest first. Each is priced
    /// for every call and shown to the policy as `request.downgrade-chain`
    /// (contract 0.2.0); it restricts nothing.
    pub downgrade_chain: Vec<String>,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            config: String::new(),
            failure_mode: FailureMode::Closed,
            deadline_ms: 5,
            memory_limit_mib: 16,
            instances: InstanceStrategy::default(),
            downgrade_chain: Vec::new(),
        }
    }
}

/// A version that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("deadline-ms = {0} is out of range: use 1 to 1000 milliseconds")]
    Deadline(u64),
    #[error("memory-limit-mib = {asked} is out of range: use 1 to {max} (the engine's per-instance maximum)")]
    Memory { asked: u32, max: usize },
    #[error(
        "downgrade-chain must list at most {MAX_DOWNGRADE_CHAIN} model ids, each 1 to {MAX_MODEL_ID_BYTES} bytes without control characters"
    )]
    DowngradeChain,
    #[error("the policy refused its config: {0}. Fix the tenant's policy parameters")]
    ConfigRefused(String),
    #[error("the policy failed while checking its config ({0})")]
    ConfigCheckFailed(PolicyFailure),
}

/// A tenant's policy version, ready to decide.
pub struct PolicyVersion {
    id: PolicyVersionId,
    component: Arc<PolicyComponent>,
    settings: PolicySettings,
    instances: Instances,
    breaker: Breaker,
    /// Quick calls still needed to be light again; 0 = light.
    heavy: AtomicU32,
    created_at: SystemTime,
    source: String,
}

impl PolicyVersion {
    /// Binds a component to a tenant's settings, after checking the settings
    /// and running the policy's `validate-config` on them.
    pub fn build(
        engine: &PolicyEngine,
        component: Arc<PolicyComponent>,
        tenant: TenantId,
        number: u32,
        settings: PolicySettings,
        source: String,
    ) -> Result<Self, VersionError> {
        if !(1..=1000).contains(&settings.deadline_ms) {
            return Err(VersionError::Deadline(settings.deadline_ms));
        }
        let max_mib = engine.settings().max_memory_bytes >> 20;
        let memory_bytes = (settings.memory_limit_mib as usize) << 20;
        if settings.memory_limit_mib == 0 || memory_bytes > engine.settings().max_memory_bytes {
            return Err(VersionError::Memory {
                asked: settings.memory_limit_mib,
                max: max_mib,
            });
        }
        if settings.downgrade_chain.len() > MAX_DOWNGRADE_CHAIN
            || settings
                .downgrade_chain
                .iter()
                .any(|m| m.is_empty() || m.len() > MAX_MODEL_ID_BYTES || m.chars().any(char::is_control))
        {
            return Err(VersionError::DowngradeChain);
        }
        let id = PolicyVersionId {
            tenant,
            number,
            digest: Arc::from(component.short_digest()),
        };
        let limits = CallLimits {
            deadline_ticks: settings.deadline_ms,
            memory_bytes,
        };
        let instances = Instances::new(
            engine.clone(),
            Arc::clone(&component),
            Arc::from(id.to_string()),
            limits,
            settings.instances,
        );
        match instances.validate_config(&settings.config) {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(VersionError::ConfigRefused(message)),
            Err(failure) => return Err(VersionError::ConfigCheckFailed(failure)),
        }
        Ok(PolicyVersion {
            id,
            component,
            settings,
            instances,
            breaker: Breaker::new(BreakerSettings::default()),
            heavy: AtomicU32::new(0),
            created_at: SystemTime::now(),
            source,
        })
    }

    /// Sets when the version was first created, for one restored from a store.
    pub fn with_created_at(mut self, created_at: SystemTime) -> Self {
        self.created_at = created_at;
        self
    }

    /// Replaces the default circuit breaker settings.
    pub fn with_breaker(mut self, settings: BreakerSettings) -> Self {
        self.breaker = Breaker::new(settings);
        self
    }

    pub fn id(&self) -> &PolicyVersionId {
        &self.id
    }

    pub fn component(&self) -> &Arc<PolicyComponent> {
        &self.component
    }

    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }

    /// Where the policy came from (a path, "admin API", ...).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Decides one call. The tenant id and this version's config are written
    /// into the request first, so the policy always sees its own parameters.
    pub fn decide(&self, request: &mut Request, state: &TenantState) -> Decision {
        self.decide_checked(request, state, &|_| Ok(()))
    }

    /// [`PolicyVersion::decide`] with the host's own check of the verdict on
    /// top of the contract's: a verdict it refuses is an invalid output, and
    /// the tenant's failure mode decides instead. Runs on the calling
    /// thread; the gateway uses a [`crate::registry::DecisionPool`] instead.
    pub fn decide_checked(
        &self,
        request: &mut Request,
        state: &TenantState,
        host_check: &VerdictCheck<'_>,
    ) -> Decision {
        self.bind(request);
        if let Some(skipped) = self.short_circuit() {
            return skipped;
        }
        self.conclude(self.run_retrying(request, state), host_check)
    }

    /// Decides with the request exactly as given (its `config` included);
    /// for test cases that pin their own parameters. The circuit breaker
    /// neither skips nor counts these calls.
    pub fn decide_as_is(&self, request: &Request, state: &TenantState) -> Decision {
        let run = self.run(request, state);
        self.decide_from(run, &|_| Ok(()), false)
    }

    /// Decides a test case: on a new instance when `session` is `None`, else
    /// on the session's instance. Neither the breaker nor the heavy lane
    /// sees these calls.
    pub(crate) fn decide_case(
        &self,
        request: &Request,
        state: &TenantState,
        session: Option<&mut Session<'_>>,
    ) -> Decision {
        let start = Instant::now();
        let outcome = match session {
            None => {
                // A case checks the policy's logic, and one timeout can be the
                // machine's (a thread descheduled past a 5 ms deadline). A
                // policy that is really too slow times out every time.
                let mut outcome = self.instances.decide_fresh(request, state);
                for _ in 0..CASE_TIMEOUT_RETRIES {
                    match &outcome {
                        Err(failure) if failure.kind == FailureKind::Timeout => {
                            outcome = self.instances.decide_fresh(request, state);
                        }
                        _ => break,
                    }
                }
                outcome
            }
            Some(session) => session.decide(request, state),
        }
        .and_then(|verdict| check_verdict(&verdict).map(|()| verdict));
        let run = Run {
            outcome,
            elapsed: start.elapsed(),
            ran: true,
        };
        self.decide_from(run, &|_| Ok(()), false)
    }

    /// One instance kept across test cases; see [`Self::decide_case`].
    pub(crate) fn session(&self) -> Session<'_> {
        self.instances.session()
    }

    /// Writes the tenant id and this version's config into the request.
    pub(crate) fn bind(&self, request: &mut Request) {
        request.tenant_id.clear();
        request.tenant_id.push_str(self.id.tenant.as_str());
        request.config.clear();
        request.config.push_str(&self.settings.config);
    }

    /// Fills `request.requested` and `request.downgrade-chain` (contract
    /// 0.2.0) from the engine's price book, at the standard tier: for test
    /// cases and for embedders without the gateway, whose own catalog
    /// prices tiers and long contexts too.
    pub fn price_options(&self, request: &mut Request, chain: &[String]) {
        let prices = self.instances.prices();
        let caching = !request.cache_points.is_empty();
        let option = |model_id: &str| {
            let price = prices.price(model_id);
            let worst = price.map(|p| {
                let price = crate::pricing::Price {
                    input: NanoUsd(p.input),
                    output: NanoUsd(p.output),
                    cache_read: NanoUsd(p.cache_read),
                    cache_write_5m: NanoUsd(p.cache_write),
                    cache_write_1h: NanoUsd(p.cache_write_long),
                };
                hold_cost(
                    price,
                    request.estimated_input_tokens,
                    request.max_output_tokens,
                    caching,
                )
                .get()
            });
            ModelOption {
                model_id: model_id.to_owned(),
                price,
                worst_case_cost: worst,
            }
        };
        let requested = option(&request.model_id);
        let chain = chain.iter().map(|model| option(model)).collect();
        request.requested = requested;
        request.downgrade_chain = chain;
    }

    /// The failure mode's decision, without running the policy, while its
    /// circuit breaker is open.
    pub(crate) fn short_circuit(&self) -> Option<Decision> {
        let open = self.breaker.check().err()?;
        let failure = PolicyFailure {
            kind: FailureKind::CircuitOpen,
            detail: format!(
                "it failed its last {} calls, so it is skipped for {} ms more",
                open.failures,
                open.remaining.as_millis()
            ),
        };
        Some(Decision::from_failure(
            failure,
            self.settings.failure_mode,
            self.id.clone(),
            Duration::ZERO,
        ))
    }

    /// Runs the policy and checks its verdict against the contract. The
    /// host's own check comes in [`Self::conclude`]. The deadline counts the
    /// policy's CPU time, so a call that waited for a core is not timed out
    /// for it (`engine::cpu_deadline`).
    pub(crate) fn run(&self, request: &Request, state: &TenantState) -> Run {
        let mut began = CallStart::now();
        // The whole call's time, for its record; `began` may move past an instance it creates.
        let start = began.wall;
        let outcome = self
            .instances
            .decide(request, state, &mut began)
            .and_then(|verdict| check_verdict(&verdict).map(|()| verdict));
        let elapsed = start.elapsed();
        self.weigh(&began, &outcome);
        Run {
            outcome,
            elapsed,
            ran: true,
        }
    }

    /// [`Self::run`], and once more on the same thread when
    /// [`Self::decides_again`] says so.
    pub(crate) fn run_retrying(&self, request: &Request, state: &TenantState) -> Run {
        let light = !self.is_heavy();
        let run = self.run(request, state);
        if self.decides_again(light, &run) {
            self.run(request, state).after(&run)
        } else {
            run
        }
    }

    /// Whether a run is decided once more: a light version's call (`light`,
    /// as it was before the call) that ran past its deadline. One timeout of
    /// a policy whose calls are quick is more likely the machine's than the
    /// policy's: a virtual machine whose host stops its CPU for a few
    /// milliseconds counts that time as the thread's own, which the CPU
    /// deadline cannot tell from work. A policy that really spins is heavy
    /// after that call and gets no second run until it is light again (64
    /// quick calls in a row), so this adds at most one deadline per 65
    /// calls to what a hostile tenant can take. The first run is not
    /// counted by the circuit breaker; it is logged.
    pub(crate) fn decides_again(&self, light: bool, run: &Run) -> bool {
        if !light || !run.timed_out() {
            return false;
        }
        if let Some(suppressed) = crate::log_gate::POLICY_FAILURES.admit(self.id.tenant.as_str())
            && let Err(failure) = &run.outcome
        {
            tracing::warn!(policy = %self.id, %failure, suppressed,
                "a policy whose calls were quick ran past its deadline; deciding the call once more");
        }
        true
    }

    /// Judges the policy by the CPU its decision used, from after any
    /// instance the call created. Heavy: it burned half its deadline. Light
    /// again only after LIGHT_AGAIN_AFTER calls in a row that each used
    /// under a quarter of it, so a policy cannot alternate cheaply. A call
    /// stopped by the wall-clock cap with little CPU used waited for a
    /// core: the host's doing (a busy host, a throttled container), not the
    /// policy's, so it counts as quick. Marking it heavy would move it to
    /// the lowest priority, where a busy host starves it for good.
    fn weigh(&self, began: &CallStart, outcome: &Result<Verdict, PolicyFailure>) {
        if !began.entered {
            // No instance could be made: nothing is known of the decision's cost.
            return;
        }
        let deadline = self.deadline();
        let wall = began.wall.elapsed();
        // CPU time never exceeds wall time: below a quarter of the deadline
        // on the wall clock, the thread's clock (a system call) need not be read.
        let used = if wall < deadline / 4 {
            wall
        } else {
            began.cpu_used().unwrap_or(wall)
        };
        let decided = match outcome {
            Ok(_) => true,
            Err(failure) => failure.kind == FailureKind::Timeout,
        };
        if used >= deadline / 2 {
            self.heavy.store(LIGHT_AGAIN_AFTER, Ordering::Relaxed);
        } else if decided && used < deadline / 4 {
            let _ = self
                .heavy
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        } else if self.heavy.load(Ordering::Relaxed) != 0 {
            self.heavy.store(LIGHT_AGAIN_AFTER, Ordering::Relaxed);
        }
    }

    /// Whether recent calls used much of the deadline; the decision pool
    /// runs such a version on its low-priority lane.
    pub fn is_heavy(&self) -> bool {
        self.heavy.load(Ordering::Relaxed) != 0
    }

    /// Turns a run into the decision: the host's check, the circuit breaker,
    /// and the failure mode when the policy failed.
    pub(crate) fn conclude(&self, run: Run, host_check: &VerdictCheck<'_>) -> Decision {
        self.decide_from(run, host_check, true)
    }

    fn decide_from(&self, run: Run, host_check: &VerdictCheck<'_>, count: bool) -> Decision {
        let outcome = run.outcome.and_then(|verdict| {
            host_check(&verdict).map_err(|detail| PolicyFailure {
                kind: FailureKind::InvalidOutput,
                detail,
            })?;
            Ok(verdict)
        });
        match outcome {
            Ok(verdict) => {
                if count {
                    self.breaker.success();
                }
                Decision::from_verdict(verdict, self.id.clone(), run.elapsed)
            }
            Err(failure) => {
                let tripped = if count && run.ran { self.breaker.failure() } else { None };
                if let Some(cooldown) = tripped {
                    tracing::warn!(policy = %self.id, failure = %failure, cooldown_ms = cooldown.as_millis() as u64,
                        "policy failed too many calls in a row; skipping it and applying the tenant's failure mode");
                } else if let Some(suppressed) = crate::log_gate::POLICY_FAILURES.admit(self.id.tenant.as_str()) {
                    // A policy failing on every call must not flood the log.
                    tracing::warn!(policy = %self.id, failure = %failure, suppressed, "policy failed; applying the tenant's failure mode");
                }
                Decision::from_failure(failure, self.settings.failure_mode, self.id.clone(), run.elapsed)
            }
        }
    }

    /// Creates and drops one instance, for measuring the fresh strategy's
    /// floor. Not part of the decision path.
    #[doc(hidden)]
    pub fn instantiate_for_bench(&self) {
        self.instances.instantiate_only();
    }

    /// Drops the idle instances, freeing their memory and pool slots; for a
    /// version that is no longer active. Calls still in flight on it finish,
    /// and a later call (after a rollback) instantiates again.
    pub fn release_idle(&self) {
        self.instances.release_idle();
    }

    /// Keeps idle instances again, and creates one, for a version made
    /// active (or the shadow) again.
    pub(crate) fn keep_idle(&self) {
        self.instances.keep_idle();
        self.prewarm();
    }

    /// Creates an idle instance ahead of the first decision (pooled
    /// strategy), and has it decide a made-up call, so that decision
    /// neither waits for it nor pays for its first run.
    pub(crate) fn prewarm(&self) {
        let (request, state) = self.rehearsal();
        self.instances.prewarm(Some((&request, &state)));
    }

    /// The made-up call a new instance rehearses: a mid-sized prompt to a
    /// priced model, with this version's config and chain, on a fresh budget.
    fn rehearsal(&self) -> (Request, TenantState) {
        let now_ms = crate::wall_clock::now_ms();
        let mut request = Request {
            request_id: "tollgate-rehearsal".into(),
            model_id: REHEARSAL_MODEL.into(),
            base_model_id: REHEARSAL_MODEL.into(),
            estimated_input_tokens: 1_000,
            max_output_tokens: 500,
            now_ms,
            ..Request::default()
        };
        self.bind(&mut request);
        self.price_options(&mut request, &self.settings.downgrade_chain);
        request.worst_case_cost = request.requested.worst_case_cost.unwrap_or(0);
        let mut state = TenantState::default();
        state.budget.limit = 1_000_000_000;
        (request, state)
    }

    /// Linear memory of one warm instance (pooled strategy, after at least
    /// one decision), for `tollgate policy bench`.
    #[doc(hidden)]
    pub fn instance_memory_bytes(&self) -> Option<usize> {
        self.instances.idle_memory_bytes()
    }

    /// The deadline a decision runs under.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.settings.deadline_ms)
    }
}

impl fmt::Debug for PolicyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyVersion")
            .field("id", &self.id)
            .field("settings", &self.settings)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

//! Running one call of a policy: where its instance comes from, the limits
//! it runs under, and how a failure is classified.
//!
//! Two strategies, chosen per policy version (see `benches/RESULTS.md` for
//! the measurements behind the default):
//! - `Pooled` (default): a small stack of warm instances per version. A call
//!   pops one (or instantiates if none is idle), runs, and pushes it back.
//!   An instance that failed in any way is dropped, never reused.
//! - `Fresh`: a new instance from the `InstancePre` for every call, dropped
//!   after. Strongest isolation between calls, about 10x the cost.
//!
//! Either way each call resets the store's epoch deadline, so a call gets its
//! full time budget however long the instance has lived.
//!
//! A reused instance whose memory has grown to within [`RETIRE_HEADROOM`]
//! of its cap is retired after its call: interpreted runtimes (Python, JavaScript)
//! grow their heaps over thousands of calls, and an instance left to reach
//! the cap would fail a decision instead of a fresh one taking over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::component::{ComponentExportIndex, Func, Instance, TypedFunc};
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};

use crate::contract::{ContractVersion, Request, TenantState, Verdict, v0_1};
use crate::engine::PolicyEngine;
use crate::engine::component::PolicyComponent;
use crate::engine::cpu_deadline::{CallClock, CallStart, thread_cpu_time};
use crate::engine::failure::{FailureKind, PolicyFailure};
use crate::engine::long_call;
use crate::engine::sandbox::CallContext;

/// Epoch ticks (ms) `validate-config` may take, instantiation included.
const VALIDATE_CONFIG_TICKS: u64 = 1000;

/// Epoch ticks (ms) creating an instance may take when the deadline is
/// shorter. Creating one is the host's work (mapping memory, an
/// interpreter's start-up: about 3 ms of CPU for Python), not the
/// policy's decision, so it has a bound of its own and the decision's
/// deadline starts when the instance is ready: a Python policy at the
/// default 5 ms must not be failed for its start-up on a busy host.
const INSTANTIATE_TICKS: u64 = 50;

/// Calls one pooled instance serves before it is retired. State a policy
/// keeps between calls (it should keep none) lives at most this long, and
/// `policy test` replays the cases on one instance this many times, so a
/// policy whose verdicts drift with its call count is caught there.
pub const MAX_INSTANCE_USES: u32 = 128;

/// Room below the memory cap that a pooled instance must keep to be reused:
/// more than an interpreter's heap grows by in one step.
pub const RETIRE_HEADROOM: usize = 2 << 20;

/// Where a call's instance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "kebab-case", tag = "strategy")]
pub enum InstanceStrategy {
    /// A fresh instance for every decision.
    Fresh,
    /// Reuse up to `max_idle` warm instances per policy version.
    Pooled { max_idle: usize },
}

impl Default for InstanceStrategy {
    fn default() -> Self {
        InstanceStrategy::Pooled { max_idle: 4 }
    }
}

/// The per-call limits a tenant's policy runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Epoch ticks (milliseconds) a call may run.
    pub deadline_ticks: u64,
    /// Linear memory cap in bytes.
    pub memory_bytes: usize,
}

/// A live instance with its store.
struct Warm {
    store: Store<CallContext>,
    instance: Instance,
    decide: Func,
    /// Calls it has served.
    uses: u32,
}

/// The instances of one policy version.
pub(crate) struct Instances {
    engine: PolicyEngine,
    component: Arc<PolicyComponent>,
    label: Arc<str>,
    limits: CallLimits,
    strategy: InstanceStrategy,
    idle: Mutex<Vec<Warm>>,
    /// Set while the version is not active: instances are not kept.
    retired: AtomicBool,
    /// The made-up call new instances decide before their first real one
    /// (see [`Self::prewarm`]); dropped at its first failure.
    rehearsal: Mutex<Option<Arc<(Request, TenantState)>>>,
}

impl Instances {
    pub(crate) fn new(
        engine: PolicyEngine,
        component: Arc<PolicyComponent>,
        label: Arc<str>,
        limits: CallLimits,
        strategy: InstanceStrategy,
    ) -> Self {
        Instances {
            engine,
            component,
            label,
            limits,
            strategy,
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            rehearsal: Mutex::new(None),
        }
    }

    /// The price book policies see through `price`.
    pub(crate) fn prices(&self) -> &Arc<dyn crate::pricing::PriceBook> {
        self.engine.prices()
    }

    /// Calls `decide` under the version's limits. `start` is when the
    /// caller began, read just before: a warm instance's call counts its
    /// CPU from there, sparing a second read per decision. A call that
    /// creates its instance moves `start` to after it, so neither the
    /// deadline nor the caller's account of the policy's cost includes it.
    pub(crate) fn decide(
        &self,
        request: &Request,
        state: &TenantState,
        start: &mut CallStart,
    ) -> Result<Verdict, PolicyFailure> {
        let mut warm = match self.take_idle() {
            Some(warm) => warm,
            None => {
                let warm = self.instantiate_for_call()?;
                *start = CallStart::now();
                warm
            }
        };
        start.entered = true;
        let verdict = self.call(&mut warm, request, state, start.cpu)?;
        self.give_back(warm);
        Ok(verdict)
    }

    /// Calls `decide` on a new instance, dropped after.
    pub(crate) fn decide_fresh(&self, request: &Request, state: &TenantState) -> Result<Verdict, PolicyFailure> {
        let mut warm = self.instantiate(self.instantiate_ticks())?;
        self.call(&mut warm, request, state, thread_cpu_time())
    }

    /// Creates one idle instance if none is, so the first decision after
    /// the version is staged or made active again does not create it.
    /// Off the decision path; a failure is left for a decision to report.
    /// Skipped once idle instances hold half the engine's slots (see
    /// [`PolicyEngine::keep_idle_instance`]).
    ///
    /// With `rehearsal`, the new instance decides it first, muted, with the
    /// time creating an instance may take: the pages and lazy set-up a
    /// guest touches on its first decision (a Python interpreter's heap,
    /// copied on first write) are paid for here, not by the first real call.
    /// An instance that fails its rehearsal is not kept.
    pub(crate) fn prewarm(&self, rehearsal: Option<(&Request, &TenantState)>) {
        if let Some((request, state)) = rehearsal {
            // Kept for the instances calls create later (see `instantiate_for_call`).
            *self.rehearsal.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Arc::new((request.clone(), state.clone())));
        }
        if !matches!(self.strategy, InstanceStrategy::Pooled { max_idle } if max_idle > 0)
            || self.retired.load(Ordering::Acquire)
            || !self.idle.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
            || !self.engine.idle_instance_room()
        {
            return;
        }
        let ticks = self.instantiate_ticks();
        let rehearsed = self.instantiate(ticks).and_then(|mut warm| {
            if let Some((request, state)) = rehearsal {
                self.rehearse(&mut warm, request, state, ticks)?;
            }
            Ok(warm)
        });
        match rehearsed {
            Ok(warm) => self.give_back(warm),
            Err(failure) => {
                // Calls do not rehearse what failed here (see `instantiate_for_call`).
                *self.rehearsal.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::debug!(policy = %self.label, %failure, "could not create an instance ahead of its first call")
            }
        }
    }

    /// An instance for a call that found none idle: a pooled instance was
    /// retired after its uses, or more calls came at once than were idle.
    /// It rehearses first, as [`Self::prewarm`]'s does, so the call's
    /// deadline measures its decision and not the guest's first run (a
    /// Python instance's first decision alone can pass a 5 ms deadline).
    /// A rehearsal that fails is not tried again for this version, so a
    /// policy that fails every call does not pay twice; that call gets a
    /// plain new instance.
    fn instantiate_for_call(&self) -> Result<Warm, PolicyFailure> {
        let ticks = self.instantiate_ticks();
        let rehearsal = match self.strategy {
            InstanceStrategy::Pooled { .. } => self.rehearsal.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            InstanceStrategy::Fresh => None,
        };
        let mut warm = self.instantiate(ticks)?;
        let Some(rehearsal) = rehearsal else {
            return Ok(warm);
        };
        let (request, state) = &*rehearsal;
        match self.rehearse(&mut warm, request, state, ticks) {
            Ok(()) => Ok(warm),
            Err(failure) => {
                *self.rehearsal.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::debug!(policy = %self.label, %failure, "a new instance failed its rehearsal; no more are rehearsed");
                self.instantiate(ticks)
            }
        }
    }

    /// Decides the made-up call, muted, within `ticks`.
    fn rehearse(
        &self,
        warm: &mut Warm,
        request: &Request,
        state: &TenantState,
        ticks: u64,
    ) -> Result<(), PolicyFailure> {
        warm.store.data_mut().muted = true;
        let decided = self.call_within(warm, request, state, None, ticks);
        warm.store.data_mut().muted = false;
        decided.map(drop)
    }

    fn instantiate_ticks(&self) -> u64 {
        self.limits.deadline_ticks.max(INSTANTIATE_TICKS)
    }

    /// One instance kept across calls, for checking that a policy decides
    /// the same on a reused instance as on a fresh one.
    pub(crate) fn session(&self) -> Session<'_> {
        Session {
            instances: self,
            warm: None,
        }
    }

    fn call(
        &self,
        warm: &mut Warm,
        request: &Request,
        state: &TenantState,
        cpu_started: Option<Duration>,
    ) -> Result<Verdict, PolicyFailure> {
        self.call_within(warm, request, state, cpu_started, self.limits.deadline_ticks)
    }

    fn call_within(
        &self,
        warm: &mut Warm,
        request: &Request,
        state: &TenantState,
        cpu_started: Option<Duration>,
        deadline: u64,
    ) -> Result<Verdict, PolicyFailure> {
        warm.uses = warm.uses.saturating_add(1);
        warm.store.data_mut().begin_call();
        let first = long_call::first_slice(deadline);
        warm.store.data_mut().ticks_after_slice = deadline - first;
        warm.store.data_mut().clock = CallClock::start_at(deadline, cpu_started);
        warm.store.set_epoch_deadline(first);
        let _running = self.engine.ticker().enter();
        // SAFETY: the engine type-checked `decide` against exactly these
        // parameter and result types, for the component's contract version,
        // when the component was loaded.
        let result = match self.component.contract {
            ContractVersion::V0_2 => {
                let typed: TypedFunc<(&Request, &TenantState), (Verdict,)> =
                    unsafe { TypedFunc::new_unchecked(warm.decide) };
                typed.call(&mut warm.store, (request, state))
            }
            ContractVersion::V0_1 => {
                let typed: TypedFunc<(&v0_1::Request, &v0_1::TenantState), (Verdict,)> =
                    unsafe { TypedFunc::new_unchecked(warm.decide) };
                let (request, state) = (v0_1::Request::from(request), v0_1::TenantState::from(state));
                typed.call(&mut warm.store, (&request, &state))
            }
        };
        warm.store.data_mut().end_call();
        result.map(|(verdict,)| verdict).map_err(|err| {
            self.classify(err, &warm.store, || match warm.store.data().clock.stopped() {
                Some(stopped) => format!("ran past its {deadline} ms deadline ({stopped})"),
                None => format!("ran past its {deadline} ms deadline"),
            })
        })
    }

    /// Calls `validate-config` in a fresh instance; `Ok` when the policy has
    /// no such export.
    pub(crate) fn validate_config(&self, config: &str) -> Result<Result<(), String>, PolicyFailure> {
        let Some(index) = self.component.validate_config else {
            return Ok(Ok(()));
        };
        // Load time, off the decision path: an interpreter's fresh instance
        // must not miss a millisecond deadline on a busy machine and get a
        // good policy refused. A loop here is still stopped.
        let mut warm = self.instantiate(VALIDATE_CONFIG_TICKS)?;
        warm.store.set_epoch_deadline(VALIDATE_CONFIG_TICKS);
        let _running = self.engine.ticker().enter();
        let func = func(&mut warm.store, warm.instance, index)?;
        // SAFETY: type-checked at load, as for `decide`.
        let typed: TypedFunc<(&str,), (Result<(), String>,)> = unsafe { TypedFunc::new_unchecked(func) };
        match typed.call(&mut warm.store, (config,)) {
            Ok((verdict,)) => Ok(verdict),
            Err(err) => Err(self.classify(err, &warm.store, || {
                format!("ran past the {VALIDATE_CONFIG_TICKS} ms validate-config may take")
            })),
        }
    }

    /// Linear memory held by an idle instance, if one is idle.
    pub(crate) fn idle_memory_bytes(&self) -> Option<usize> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.first().map(|warm| warm.store.data().memory_bytes())
    }

    /// Frees the idle instances and keeps none until [`Self::keep_idle`].
    pub(crate) fn release_idle(&self) {
        self.retired.store(true, Ordering::Release);
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        self.engine.idle_instance_gone(idle.len());
        drop(idle);
    }

    /// Keeps idle instances again (the version is active again).
    pub(crate) fn keep_idle(&self) {
        self.retired.store(false, Ordering::Release);
    }

    pub(crate) fn instantiate_only(&self) {
        let _ = self.instantiate(self.instantiate_ticks());
    }

    fn take_idle(&self) -> Option<Warm> {
        let warm = match self.strategy {
            InstanceStrategy::Fresh => None,
            InstanceStrategy::Pooled { .. } => self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop(),
        };
        if warm.is_some() {
            self.engine.idle_instance_gone(1);
        }
        warm
    }

    fn give_back(&self, warm: Warm) {
        if warm.uses >= MAX_INSTANCE_USES
            || self.retired.load(Ordering::Acquire)
            || warm.store.data().memory_bytes().saturating_add(RETIRE_HEADROOM) > self.limits.memory_bytes
        {
            return;
        }
        if let InstanceStrategy::Pooled { max_idle } = self.strategy {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < max_idle && self.engine.keep_idle_instance() {
                idle.push(warm);
            }
        }
    }

    fn instantiate(&self, deadline_ticks: u64) -> Result<Warm, PolicyFailure> {
        let engine = self.engine.wasmtime();
        let context = CallContext::new(
            Arc::clone(&self.label),
            Arc::clone(self.engine.prices()),
            self.limits.memory_bytes,
        );
        let mut store = Store::new(engine, context);
        store.limiter(|cx| cx);
        // At the end of a call's first slice, tell the thread's owner and
        // grant the rest; at the end of the deadline, grant the CPU time the
        // call has not used (it waited for a core), else stop it.
        store.epoch_deadline_callback(|mut cx| {
            let rest = std::mem::take(&mut cx.data_mut().ticks_after_slice);
            if rest == 0 {
                return Ok(match cx.data_mut().clock.ticks_left() {
                    Some(more) => UpdateDeadline::Continue(more),
                    None => UpdateDeadline::Interrupt,
                });
            }
            long_call::fire();
            Ok(UpdateDeadline::Continue(rest))
        });
        store.data_mut().clock = CallClock::start(deadline_ticks);
        store.set_epoch_deadline(deadline_ticks);
        let _running = self.engine.ticker().enter();
        let instance = match self.component.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(err) if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
                return Err(PolicyFailure {
                    kind: FailureKind::Capacity,
                    detail: format!(
                        "no instance slot free ({err}); raise the engine's max_instances or lower per-version idle instances"
                    ),
                });
            }
            Err(err) => {
                return Err(self.classify(err, &store, || {
                    format!("took more than {deadline_ticks} ms to start (creating its instance)")
                }));
            }
        };
        let decide = func(&mut store, instance, self.component.decide)?;
        Ok(Warm {
            store,
            instance,
            decide,
            uses: 0,
        })
    }

    /// `timeout` words a timeout for what was running: a decision, a start-up.
    fn classify(
        &self,
        err: wasmtime::Error,
        store: &Store<CallContext>,
        timeout: impl FnOnce() -> String,
    ) -> PolicyFailure {
        let (kind, detail) = if store.data().memory_exceeded {
            (
                FailureKind::MemoryLimit,
                format!("exceeded its memory limit of {} MiB", self.limits.memory_bytes >> 20),
            )
        } else {
            match err.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => (FailureKind::Timeout, timeout()),
                Some(Trap::StackOverflow) => (FailureKind::StackOverflow, "exhausted its stack".to_owned()),
                Some(trap) => (FailureKind::Trap, format!("trapped: {trap}")),
                None => (FailureKind::Trap, format!("{err:#}")),
            }
        };
        // The guest's own account of the failure: a traceback, an exception
        // and its stack, a panic message.
        let mut detail = detail;
        if let Some(logged) = store.data().last_error() {
            detail = format!("{detail}; the policy logged: {logged}");
        }
        if let Some(output) = store.data().guest_output() {
            detail = format!("{detail}{}{output}", super::failure::GUEST_OUTPUT);
        }
        PolicyFailure { kind, detail }
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        let idle = self.idle.get_mut().unwrap_or_else(|p| p.into_inner()).len();
        self.engine.idle_instance_gone(idle);
    }
}

/// See [`Instances::session`]. An instance that fails is dropped and the
/// next call starts a new one, as on the decision path.
pub(crate) struct Session<'a> {
    instances: &'a Instances,
    warm: Option<Warm>,
}

impl Session<'_> {
    pub(crate) fn decide(&mut self, request: &Request, state: &TenantState) -> Result<Verdict, PolicyFailure> {
        let mut warm = match self.warm.take() {
            Some(warm) => warm,
            None => self.instances.instantiate(self.instances.instantiate_ticks())?,
        };
        let verdict = self.instances.call(&mut warm, request, state, thread_cpu_time())?;
        self.warm = Some(warm);
        Ok(verdict)
    }

    /// Calls the current instance has served (0 before the first).
    pub(crate) fn uses(&self) -> u32 {
        self.warm.as_ref().map_or(0, |w| w.uses)
    }
}

fn func(
    store: &mut Store<CallContext>,
    instance: Instance,
    index: ComponentExportIndex,
) -> Result<Func, PolicyFailure> {
    // Present by construction: the export was found when the component loaded.
    instance.get_func(&mut *store, index).ok_or_else(|| PolicyFailure {
        kind: FailureKind::Trap,
        detail: "an export checked at load time is missing from the instance".into(),
    })
}

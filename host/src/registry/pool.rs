//! Decisions off the async workers: a bounded pool of decision threads, with
//! a share per tenant.
//!
//! A policy may run up to its deadline (as much as a second). Run inline on
//! an async worker, a few such calls would stall every other tenant, the
//! stream pumps and `/healthz`. Here:
//! - `threads` OS threads run policies; an async task hands over a job and
//!   awaits a oneshot, so a worker is never blocked by a policy.
//! - Each tenant may have at most `tenant_concurrency` calls on the threads
//!   at once (a semaphore per tenant, awaited asynchronously), so one tenant
//!   can never take the whole pool.
//! - A call that cannot start within `queue_timeout` is decided by the
//!   tenant's failure mode (`capacity`). The policy's own deadline starts
//!   when it runs, so it measures the policy, not the queue.
//! - A job whose caller has gone is dropped unrun.
//! - A light version whose deadline is at most [`INLINE_MAX_DEADLINE`] is
//!   decided on the caller's task, as the thread hop costs more than such a
//!   policy (measured: about 40% of the gateway's throughput at c=64). The
//!   most it can hold a worker is that deadline, once, before it is heavy.
//!   A light version's timeout is decided once more, on a thread
//!   ([`PolicyVersion::decides_again`]).
//! - The threads form two lanes, normal and low priority (see `lanes`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::contract::{Request, TenantState, Verdict};
use crate::engine::failure::{FailureKind, PolicyFailure};
use crate::ids::TenantId;
use crate::registry::decision::Decision;
use crate::registry::lanes::{Job, Lanes};
use crate::registry::version::{PolicyVersion, Run, VerdictCheck};

/// How many decision threads and how they are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Decision threads; 0 means one per core (at least 2).
    pub threads: usize,
    /// Calls one tenant may have on the threads at once; 0 means half the
    /// threads (at least 1).
    pub tenant_concurrency: usize,
    /// The longest a call waits for a thread before its tenant's failure
    /// mode decides it.
    pub queue_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            threads: 0,
            tenant_concurrency: 0,
            queue_timeout: Duration::from_secs(1),
        }
    }
}

impl PoolSettings {
    /// The thread count after defaults.
    pub fn resolved_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
    }

    /// The per-tenant share after defaults.
    pub fn resolved_tenant_concurrency(&self) -> usize {
        if self.tenant_concurrency > 0 {
            return self.tenant_concurrency.min(self.resolved_threads());
        }
        (self.resolved_threads() / 2).max(1)
    }
}

/// The longest deadline a light version may be decided inline with.
pub const INLINE_MAX_DEADLINE: Duration = Duration::from_millis(10);

/// The pool. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct DecisionPool {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Lanes,
    shares: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    tenant_concurrency: usize,
    queue_timeout: Duration,
    threads: usize,
}

impl DecisionPool {
    /// Starts the decision threads.
    pub fn start(settings: PoolSettings) -> std::io::Result<Self> {
        let threads = settings.resolved_threads();
        let lanes = Lanes::start(threads)?;
        Ok(DecisionPool {
            inner: Arc::new(Inner {
                lanes,
                shares: Mutex::new(HashMap::new()),
                tenant_concurrency: settings.resolved_tenant_concurrency(),
                queue_timeout: settings.queue_timeout,
                threads,
            }),
        })
    }

    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    pub fn tenant_concurrency(&self) -> usize {
        self.inner.tenant_concurrency
    }

    /// Decides one call on a decision thread with `version`, as
    /// [`PolicyVersion::decide_checked`] does inline. The host check runs
    /// back on the caller's task.
    pub async fn decide<F>(
        &self,
        version: Arc<PolicyVersion>,
        mut request: Request,
        state: TenantState,
        host_check: F,
    ) -> Decision
    where
        F: Fn(&Verdict) -> Result<(), String> + Sync,
    {
        version.bind(&mut request);
        if let Some(skipped) = version.short_circuit() {
            return skipped;
        }
        let run = if !version.is_heavy() && version.deadline() <= INLINE_MAX_DEADLINE {
            let run = version.run(&request, &state);
            if version.decides_again(true, &run) {
                // Once more on a decision thread, so no worker is held for a second deadline.
                self.run(Arc::clone(&version), request, state, false).await.after(&run)
            } else {
                run
            }
        } else {
            self.run(Arc::clone(&version), request, state, true).await
        };
        let check: &VerdictCheck<'_> = &host_check;
        version.conclude(run, check)
    }

    async fn run(&self, version: Arc<PolicyVersion>, request: Request, state: TenantState, may_retry: bool) -> Run {
        let started = Instant::now();
        let timeout = self.inner.queue_timeout;
        let share = self.share(&version.id().tenant);
        let busy = |what: &str| {
            Run::not_run(PolicyFailure {
                kind: FailureKind::Capacity,
                detail: format!(
                    "{what} within {} ms; the tenant may run {} decisions at once",
                    timeout.as_millis(),
                    self.inner.tenant_concurrency
                ),
            })
        };
        let permit: OwnedSemaphorePermit = match tokio::time::timeout(timeout, share.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return busy("its tenant's earlier calls did not finish deciding"),
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            version,
            request,
            state,
            reply,
            _permit: permit,
            started,
            timeout,
            may_retry,
        };
        if !self.inner.lanes.send(job) {
            return busy("the decision pool has stopped; no thread started it");
        }
        answer.await.unwrap_or_else(|_| {
            Run::not_run(PolicyFailure {
                kind: FailureKind::Trap,
                detail: "the decision thread failed while running the policy".into(),
            })
        })
    }

    fn share(&self, tenant: &TenantId) -> Arc<Semaphore> {
        let mut shares = self.inner.shares.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(share) = shares.get(tenant) {
            return Arc::clone(share);
        }
        let share = Arc::new(Semaphore::new(self.inner.tenant_concurrency));
        shares.insert(tenant.clone(), Arc::clone(&share));
        share
    }
}

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
//! - Two lanes of as many threads each. A version whose recent call burned
//!   half its deadline in CPU, or timed out, is heavy and runs on the low
//!   lane, whose threads run at the lowest OS priority (nice 19 on Linux):
//!   a spinning policy then gets only the CPU nobody else wants, and the
//!   normal lane, the async workers and `/healthz` keep theirs. A heavy
//!   version that decides quickly again returns to the normal lane.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::contract::{Request, TenantState, Verdict};
use crate::engine::failure::{FailureKind, PolicyFailure};
use crate::ids::TenantId;
use crate::registry::decision::Decision;
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

/// One call handed to a decision thread.
struct Job {
    version: Arc<PolicyVersion>,
    request: Request,
    state: TenantState,
    reply: oneshot::Sender<Run>,
    /// Held until the policy returns, even if the caller left: a tenant
    /// whose callers hang up still cannot exceed its share.
    _permit: OwnedSemaphorePermit,
    started: Instant,
    timeout: Duration,
}

impl Job {
    fn execute(self) {
        if self.reply.is_closed() {
            return;
        }
        if self.started.elapsed() > self.timeout {
            let _ = self.reply.send(Run::not_run(PolicyFailure {
                kind: FailureKind::Capacity,
                detail: format!("no decision thread was free within {} ms", self.timeout.as_millis()),
            }));
            return;
        }
        let run = self.version.run(&self.request, &self.state);
        let _ = self.reply.send(run);
    }
}

/// The pool. Cheap to clone; the threads stop when the last clone is dropped.
#[derive(Clone)]
pub struct DecisionPool {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: crossbeam_channel::Sender<Job>,
    heavy_jobs: crossbeam_channel::Sender<Job>,
    shares: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    tenant_concurrency: usize,
    queue_timeout: Duration,
    threads: usize,
}

impl DecisionPool {
    /// Starts the decision threads.
    pub fn start(settings: PoolSettings) -> std::io::Result<Self> {
        let threads = settings.resolved_threads();
        let heavy_jobs = spawn_lane("tollgate-heavy", threads, None)?;
        let jobs = spawn_lane("tollgate-decide", threads, Some(heavy_jobs.clone()))?;
        Ok(DecisionPool {
            inner: Arc::new(Inner {
                jobs,
                heavy_jobs,
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
            version.run(&request, &state)
        } else {
            self.run(Arc::clone(&version), request, state).await
        };
        let check: &VerdictCheck<'_> = &host_check;
        version.conclude(run, check)
    }

    async fn run(&self, version: Arc<PolicyVersion>, request: Request, state: TenantState) -> Run {
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
        };
        let lane = if job.version.is_heavy() {
            &self.inner.heavy_jobs
        } else {
            &self.inner.jobs
        };
        if lane.send(job).is_err() {
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

/// Starts one lane's threads; they stop when its senders are dropped. The
/// normal lane passes `heavy`: a queued call whose version turned heavy
/// meanwhile moves there instead of running here.
fn spawn_lane(
    name: &str,
    threads: usize,
    heavy: Option<crossbeam_channel::Sender<Job>>,
) -> std::io::Result<crossbeam_channel::Sender<Job>> {
    let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
    for i in 0..threads {
        let queue: crossbeam_channel::Receiver<Job> = queue.clone();
        let heavy = heavy.clone();
        std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
            if heavy.is_none() {
                lower_priority();
            }
            for job in queue {
                let job = match &heavy {
                    Some(lane) if job.version.is_heavy() => match lane.send(job) {
                        Ok(()) => continue,
                        Err(crossbeam_channel::SendError(job)) => job,
                    },
                    _ => job,
                };
                // A panic loses only its own call: the caller's oneshot is
                // dropped and its failure mode decides.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job.execute()));
            }
        })?;
    }
    Ok(jobs)
}

/// Gives the calling thread the lowest scheduling priority. Lowering needs
/// no privilege; where it fails the lane still separates heavy tenants.
#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower the heavy decision lane's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

//! The decision threads, in two lanes.
//!
//! - **Normal lane**: `threads` threads at normal priority. A call that runs
//!   past [`DEMOTE_AFTER_TICKS`] on one is moved off it while it runs: its
//!   thread lowers itself to the lowest OS priority (`SCHED_IDLE` on Linux),
//!   spawns a normal-lane thread to take its place, and after the call
//!   serves the low lane (or ends, if that lane is full). So however many
//!   tenants start spinning at once, each holds a normal thread for
//!   milliseconds, not for its deadline.
//! - **Low lane**: threads at the lowest priority, for versions known to be
//!   heavy (see `PolicyVersion::is_heavy`). A spinning policy there gets only
//!   the CPU nobody else wants; the normal lane, the async workers and
//!   `/healthz` keep theirs.
//!
//! A job whose version turned heavy while it was queued on the normal lane
//! moves to the low lane before it runs.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::contract::{Request, TenantState};
use crate::engine::failure::{FailureKind, PolicyFailure};
use crate::engine::long_call::{self, LongCallHook};
use crate::registry::version::{PolicyVersion, Run};

/// How long a call may run on a normal-priority thread (epoch ticks, ms).
pub const DEMOTE_AFTER_TICKS: u64 = 10;

/// One call handed to a decision thread.
pub(crate) struct Job {
    pub(crate) version: Arc<PolicyVersion>,
    pub(crate) request: Request,
    pub(crate) state: TenantState,
    pub(crate) reply: oneshot::Sender<Run>,
    /// Held until the policy returns, even if the caller left: a tenant
    /// whose callers hang up still cannot exceed its share.
    pub(crate) _permit: OwnedSemaphorePermit,
    pub(crate) started: Instant,
    pub(crate) timeout: Duration,
    /// Whether a timeout may be decided once more
    /// ([`PolicyVersion::decides_again`]); not when the job is that second try.
    pub(crate) may_retry: bool,
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
        let run = if self.may_retry {
            self.version.run_retrying(&self.request, &self.state)
        } else {
            self.version.run(&self.request, &self.state)
        };
        let _ = self.reply.send(run);
    }
}

/// Where jobs are sent. Dropping it stops the threads once their queues are empty.
pub(crate) struct Lanes {
    normal: Sender<Job>,
    low: Sender<Job>,
}

/// What a normal-lane thread needs, including to replace itself.
struct Shared {
    normal: Receiver<Job>,
    low_sender: Sender<Job>,
    low: Receiver<Job>,
    low_threads: Arc<AtomicUsize>,
    max_low_threads: usize,
    spawned: AtomicUsize,
}

impl Lanes {
    pub(crate) fn start(threads: usize) -> std::io::Result<Lanes> {
        let (normal, normal_queue) = crossbeam_channel::unbounded::<Job>();
        let (low, low_queue) = crossbeam_channel::unbounded::<Job>();
        let shared = Arc::new(Shared {
            normal: normal_queue,
            low_sender: low.clone(),
            low: low_queue.clone(),
            low_threads: Arc::new(AtomicUsize::new(threads)),
            max_low_threads: threads.saturating_mul(4),
            spawned: AtomicUsize::new(0),
        });
        for i in 0..threads {
            let queue = low_queue.clone();
            std::thread::Builder::new()
                .name(format!("tollgate-low-{i}"))
                .spawn(move || {
                    lower_priority();
                    serve_low(&queue);
                })?;
            spawn_normal(&shared)?;
        }
        Ok(Lanes { normal, low })
    }

    /// Queues a job on the lane its version belongs to; `false` once the
    /// threads have stopped.
    pub(crate) fn send(&self, job: Job) -> bool {
        let lane = if job.version.is_heavy() {
            &self.low
        } else {
            &self.normal
        };
        lane.send(job).is_ok()
    }
}

fn spawn_normal(shared: &Arc<Shared>) -> std::io::Result<()> {
    let n = shared.spawned.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name(format!("tollgate-decide-{n}"))
        .spawn(move || serve_normal(shared))
        .map(drop)
}

fn serve_normal(shared: Arc<Shared>) {
    let demoted = Rc::new(Cell::new(false));
    let flag = Rc::clone(&demoted);
    let replace = Arc::clone(&shared);
    long_call::set_hook(Some(LongCallHook {
        after_ticks: DEMOTE_AFTER_TICKS,
        on_long: Box::new(move || {
            if flag.replace(true) {
                return;
            }
            lower_priority();
            if let Err(e) = spawn_normal(&replace) {
                tracing::error!(error = %e, "cannot start a decision thread; the normal lane has one fewer");
            }
        }),
    }));
    for job in shared.normal.iter() {
        let job = if job.version.is_heavy() {
            match shared.low_sender.send(job) {
                Ok(()) => continue,
                Err(SendError(job)) => job,
            }
        } else {
            job
        };
        run(job);
        if demoted.get() {
            break;
        }
    }
    long_call::set_hook(None);
    if !demoted.get() {
        return;
    }
    // Replaced on the normal lane: serve the low lane, if it has room.
    let low = shared.low.clone();
    let counter = Arc::clone(&shared.low_threads);
    let admitted = counter.fetch_add(1, Ordering::Relaxed) < shared.max_low_threads;
    // Holding `shared` would keep the low lane's sender, and so this thread, alive.
    drop(shared);
    if admitted {
        serve_low(&low);
    }
    counter.fetch_sub(1, Ordering::Relaxed);
}

fn serve_low(queue: &Receiver<Job>) {
    for job in queue.iter() {
        run(job);
    }
}

fn run(job: Job) {
    // A panic loses only its own call: the caller's oneshot is dropped and
    // its failure mode decides.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job.execute()));
}

/// Gives the calling thread the lowest scheduling priority: `SCHED_IDLE`,
/// which any normal thread preempts at once on waking (nice 19 alone still
/// gets a time slice in its turn), else nice 19. Lowering needs no
/// privilege; where both fail the lanes still keep heavy tenants apart.
#[cfg(target_os = "linux")]
pub(crate) fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on the calling thread's own id, with a param we own.
    let idle = unsafe { libc::sched_setscheduler(libc::gettid(), libc::SCHED_IDLE, &param) };
    if idle == 0 {
        return;
    }
    // SAFETY: as above.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot lower a decision thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_priority() {}

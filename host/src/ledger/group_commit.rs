//! Group commit: one thread commits whatever writes have queued up since its
//! last commit, so many concurrent callers share one fsync. A caller that
//! needs durability queues its writes as urgent and waits for the batch
//! holding them; other writes ride along with the next urgent batch, or are
//! flushed within [`LAZY_FLUSH`] when none comes.
//!
//! Waiting callers are parked threads woken one by one after their batch,
//! not a condvar broadcast: hundreds of waiters waking at once would take
//! turns at one mutex and stall the next batch. Async callers wait on a
//! [`Committed`] future instead, and no thread waits for them.
//!
//! When a commit is only an append (no fsync), a waiting task writes the
//! queued batch itself if no one else is writing: waking the committer
//! thread and being woken back cost more than the append. The committer
//! still writes when that path is busy, and alone takes checkpoints.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError, TryLockResult};
use std::task::{Context, Poll, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use super::book_store::Waiter;
use super::error::StoreError;
use super::store::Durable;

/// Commits one batch, in order, as durably as the store acknowledges. It
/// returns whether it left work for a checkpoint (`Dirty`).
pub(crate) type CommitBatch<W> = Box<dyn FnMut(Vec<W>, Writer) -> Result<Dirty, StoreError> + Send>;

/// Whether a commit left changes only in the write-ahead log.
pub(crate) type Dirty = bool;

/// Who commits a batch, which decides what the commit may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    /// A waiting task, on an async worker: it must not wait on the disk.
    Task,
    /// The committer thread: it may take a checkpoint when one is due.
    Committer,
    /// The committer thread once writes paused for the checkpoint
    /// interval, or at shutdown: take the checkpoint now.
    Idle,
}

/// How long a write nobody waits for may stay queued alone. Not committing it
/// at once keeps it from delaying the urgent write that usually follows
/// (a reservation is followed by its settle).
pub(crate) const LAZY_FLUSH: Duration = Duration::from_millis(5);

/// How many more batches a task that commits its own makes for tasks that
/// queued behind it, before it hands them to the committer thread.
const LEAD_ROUNDS: usize = 4;

/// Position of a write in the queue; durable once the committed ticket reaches it.
pub(crate) type Ticket = u64;

struct Queue<W> {
    writes: Vec<W>,
    /// Threads waiting for writes in `writes`.
    waiters: Vec<Thread>,
    /// Tasks waiting for a ticket to be committed.
    tasks: Vec<(Ticket, Waker)>,
    /// Ticket of the last write enqueued.
    enqueued: Ticket,
    failure: Option<StoreError>,
    shutting_down: bool,
    /// The committer sleeps on `pending` and has not been woken since.
    /// Only then does a caller signal it: a busy committer looks at the
    /// queue again before it sleeps, and a signal is a system call.
    idle: bool,
    /// A task is committing, and commits for the tasks that wait meanwhile.
    leading: bool,
}

struct Shared<W> {
    queue: Mutex<Queue<W>>,
    /// Wakes the committer: someone waits, or shutdown.
    pending: Condvar,
    /// Every write up to this ticket is durable.
    committed: AtomicU64,
    stopped: AtomicBool,
    /// Commits batches. Held from taking a batch to publishing its ticket,
    /// so batches are committed in ticket order whoever commits them.
    commit: Mutex<CommitBatch<W>>,
    /// Whether a waiting task may commit the queued batch itself.
    tasks_commit: bool,
    /// The last commit left work for a checkpoint.
    dirty: AtomicBool,
}

impl<W> Shared<W> {
    fn lock(&self) -> MutexGuard<'_, Queue<W>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the committer if it sleeps; called with the queue locked.
    fn signal(&self, q: &mut Queue<W>) {
        if q.idle {
            q.idle = false;
            self.pending.notify_one();
        }
    }

    fn stopped_error(&self) -> StoreError {
        let failure = self.lock().failure.clone();
        StoreError::Stopped(failure.map_or_else(|| "the store was closed".to_string(), |e| e.to_string()))
    }

    /// Stops the store after a failed commit and wakes every waiter, and
    /// `waiters` (those of the failed batch), to see it.
    fn fail(&self, e: StoreError, waiters: Vec<Thread>) {
        tracing::error!(error = %e, "ledger commit failed; the store stops accepting writes");
        let mut q = self.lock();
        q.failure = Some(e);
        q.shutting_down = true;
        self.stopped.store(true, Ordering::Release);
        self.signal(&mut q);
        let stranded = std::mem::take(&mut q.waiters);
        let tasks = std::mem::take(&mut q.tasks);
        drop(q);
        waiters.iter().chain(&stranded).for_each(Thread::unpark);
        tasks.into_iter().for_each(|(_, task)| task.wake());
    }

    /// Takes the commit for a batch. `None` once a commit panicked midway:
    /// the log may end in a torn record, so nothing more may follow it.
    fn take_commit<'a>(
        &self,
        commit: TryLockResult<MutexGuard<'a, CommitBatch<W>>>,
    ) -> Option<MutexGuard<'a, CommitBatch<W>>> {
        match commit {
            Ok(commit) => Some(commit),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Poisoned(_)) => {
                if !self.stopped.load(Ordering::Acquire) {
                    self.fail(StoreError::Stopped("a ledger commit panicked".into()), Vec::new());
                }
                None
            }
        }
    }

    /// Commits everything queued with `commit` (held by the caller), then
    /// publishes its ticket and wakes whoever waited for it. After a failure
    /// the store stops: every waiter is woken to see it.
    fn commit_queued(&self, commit: &mut CommitBatch<W>, writer: Writer) -> Result<(), StoreError> {
        let (batch, waiters, ticket) = {
            let mut q = self.lock();
            // A task committing commits for those that queue meanwhile.
            q.leading |= writer == Writer::Task;
            let capacity = q.writes.capacity();
            let batch = std::mem::replace(&mut q.writes, Vec::with_capacity(capacity));
            (batch, std::mem::take(&mut q.waiters), q.enqueued)
        };
        let dirty = match commit(batch, writer) {
            Ok(dirty) => dirty,
            Err(e) => {
                self.fail(e.clone(), waiters);
                return Err(e);
            }
        };
        let was_dirty = self.dirty.swap(dirty, Ordering::AcqRel);
        self.committed.store(ticket, Ordering::Release);
        waiters.iter().for_each(Thread::unpark);
        let done: Vec<Waker> = {
            let mut q = self.lock();
            // A sleeping committer learns here that a checkpoint is owed.
            if dirty && !was_dirty {
                self.signal(&mut q);
            }
            let (done, waiting) = std::mem::take(&mut q.tasks)
                .into_iter()
                .partition(|(t, _)| *t <= ticket);
            q.tasks = waiting;
            done.into_iter().map(|(_, task)| task).collect()
        };
        done.into_iter().for_each(Waker::wake);
        Ok(())
    }
}

pub(crate) struct GroupCommit<W> {
    shared: Arc<Shared<W>>,
    committer: Option<JoinHandle<()>>,
}

impl<W: Send + 'static> GroupCommit<W> {
    /// `checkpoint` is how long a dirty committer waits for more writes
    /// before it asks for a checkpoint. With `tasks_commit`, a waiting task
    /// may call `commit` itself, with [`Writer::Task`].
    pub(crate) fn start(
        name: &str,
        checkpoint: Duration,
        tasks_commit: bool,
        commit: CommitBatch<W>,
    ) -> Result<Self, std::io::Error> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                writes: Vec::new(),
                waiters: Vec::new(),
                tasks: Vec::new(),
                enqueued: 0,
                failure: None,
                shutting_down: false,
                idle: false,
                leading: false,
            }),
            pending: Condvar::new(),
            committed: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            commit: Mutex::new(commit),
            tasks_commit,
            dirty: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let committer = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run_committer(&worker, checkpoint))?;
        Ok(GroupCommit {
            shared,
            committer: Some(committer),
        })
    }

    /// Fails once a commit has failed: later writes could not be made durable.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(self.shared.stopped_error());
        }
        Ok(())
    }

    /// Queue writes; returns the ticket they are durable at. With
    /// [`Waiter::Thread`], the calling thread must then call
    /// [`wait`](Self::wait) with that ticket; with [`Waiter::Task`], a task
    /// must await [`durable`](Self::durable).
    pub(crate) fn enqueue(&self, writes: impl IntoIterator<Item = W>, waiter: Waiter) -> Result<Ticket, StoreError> {
        let mut q = self.shared.lock();
        if q.failure.is_some() {
            drop(q);
            return Err(self.shared.stopped_error());
        }
        let before = q.writes.len();
        q.writes.extend(writes);
        q.enqueued += (q.writes.len() - before) as u64;
        // Wake the committer for the first waiting thread, or to start the
        // lazy flush clock for the first write. A task commits or signals
        // when it polls, or signals when it is dropped before its commit.
        match waiter {
            Waiter::Thread => {
                if q.waiters.is_empty() {
                    self.shared.signal(&mut q);
                }
                q.waiters.push(std::thread::current());
            }
            Waiter::Nobody if before == 0 => self.shared.signal(&mut q),
            Waiter::Nobody | Waiter::Task => {}
        }
        Ok(q.enqueued)
    }

    /// Block until every write up to `ticket` is durable.
    pub(crate) fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        loop {
            if self.shared.committed.load(Ordering::Acquire) >= ticket {
                return Ok(());
            }
            if self.shared.stopped.load(Ordering::Acquire) {
                return Err(self.shared.stopped_error());
            }
            // The committer unparks this thread after the batch holding its
            // writes; a wake-up for any other reason just loops.
            std::thread::park();
        }
    }
}

impl<W: Send + 'static> GroupCommit<W> {
    /// Resolves once every write up to `ticket` is durable, without a
    /// thread waiting for it.
    pub(crate) fn durable(&self, ticket: Ticket) -> Durable {
        Durable::pending(Committed {
            shared: Arc::clone(&self.shared),
            ticket,
        })
    }
}

/// The future behind [`GroupCommit::durable`].
struct Committed<W> {
    shared: Arc<Shared<W>>,
    ticket: Ticket,
}

impl<W> Future for Committed<W> {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = &self.shared;
        if shared.committed.load(Ordering::Acquire) >= self.ticket {
            return Poll::Ready(Ok(()));
        }
        if shared.tasks_commit {
            let commit = shared.take_commit(shared.commit.try_lock());
            // Nobody else is committing: commit the queue, this task's
            // writes with it, here.
            if let Some(mut commit) = commit {
                if shared.committed.load(Ordering::Acquire) >= self.ticket {
                    return Poll::Ready(Ok(()));
                }
                if shared.stopped.load(Ordering::Acquire) {
                    drop(commit);
                    return Poll::Ready(Err(shared.stopped_error()));
                }
                let mut committed = shared.commit_queued(&mut commit, Writer::Task);
                // Tasks that found the commit taken wait for this one:
                // commit for them too, for a few batches.
                let mut rounds = 0;
                loop {
                    let mut q = shared.lock();
                    let waiting = !q.tasks.is_empty() && !q.writes.is_empty();
                    if committed.is_ok() && waiting && rounds < LEAD_ROUNDS {
                        drop(q);
                        rounds += 1;
                        committed = shared.commit_queued(&mut commit, Writer::Task);
                        continue;
                    }
                    q.leading = false;
                    if waiting {
                        shared.signal(&mut q);
                    }
                    break;
                }
                drop(commit);
                return Poll::Ready(committed.map_err(|_| shared.stopped_error()));
            }
        }
        // Checked again under the lock: the committer publishes `committed`
        // before it takes the lock to wake the tasks of that batch.
        let mut q = shared.lock();
        if shared.committed.load(Ordering::Acquire) >= self.ticket {
            return Poll::Ready(Ok(()));
        }
        if shared.stopped.load(Ordering::Acquire) {
            drop(q);
            return Poll::Ready(Err(shared.stopped_error()));
        }
        match q
            .tasks
            .iter_mut()
            .find(|(t, w)| *t == self.ticket && w.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => q.tasks.push((self.ticket, cx.waker().clone())),
        }
        // Wake the committer: a task waiting is as urgent as a parked
        // thread. A task committing will commit this one's writes too.
        if !q.leading {
            shared.signal(&mut q);
        }
        Poll::Pending
    }
}

impl<W> Drop for Committed<W> {
    /// A task that stops waiting before its commit leaves its writes to
    /// the committer's lazy flush.
    fn drop(&mut self) {
        if self.shared.committed.load(Ordering::Acquire) < self.ticket {
            let mut q = self.shared.lock();
            self.shared.signal(&mut q);
        }
    }
}

/// The committer thread: sleeps until a write is owed or a checkpoint is
/// due, then commits everything queued.
fn run_committer<W>(shared: &Shared<W>, checkpoint: Duration) {
    // When a checkpoint is owed: `checkpoint` after the log became dirty.
    let mut due: Option<Instant> = None;
    loop {
        let mut q = shared.lock();
        let mut checkpoint_now = false;
        while q.waiters.is_empty() && q.tasks.is_empty() && !q.shutting_down {
            let wait = if !q.writes.is_empty() {
                Some(LAZY_FLUSH)
            } else if shared.dirty.load(Ordering::Acquire) {
                let at = *due.get_or_insert_with(|| Instant::now().checked_add(checkpoint).unwrap_or(far_future()));
                let left = at.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    checkpoint_now = true;
                    break;
                }
                Some(left)
            } else {
                due = None;
                None
            };
            q.idle = true;
            let timed_out = match wait {
                None => {
                    q = shared.pending.wait(q).unwrap_or_else(PoisonError::into_inner);
                    false
                }
                Some(wait) => {
                    let (guard, waited) = shared
                        .pending
                        .wait_timeout(q, wait)
                        .unwrap_or_else(PoisonError::into_inner);
                    q = guard;
                    waited.timed_out()
                }
            };
            q.idle = false;
            if timed_out && !q.writes.is_empty() {
                break;
            }
        }
        if q.failure.is_some() {
            return;
        }
        if q.writes.is_empty() && !shared.dirty.load(Ordering::Acquire) {
            // A task waits only for a write still queued or just
            // committed; wake any other so none is stranded.
            q.tasks.drain(..).for_each(|(_, task)| task.wake());
            if q.shutting_down {
                return;
            }
            continue;
        }
        let writer = if checkpoint_now || q.shutting_down {
            due = None;
            Writer::Idle
        } else {
            Writer::Committer
        };
        drop(q);
        let taken = shared.commit.lock().map_err(TryLockError::Poisoned);
        let Some(mut commit) = shared.take_commit(taken) else {
            return;
        };
        if shared.commit_queued(&mut commit, writer).is_err() {
            return;
        }
    }
}

/// A deadline that never comes, for a checkpoint interval too long to add.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

impl<W> Drop for GroupCommit<W> {
    /// Commit what is queued, then stop the committer.
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.shutting_down = true;
        self.shared.signal(&mut q);
        drop(q);
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committer(fail: bool, tasks_commit: bool) -> (GroupCommit<u32>, Arc<Mutex<Vec<u32>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let commit: CommitBatch<u32> = Box::new(move |batch, _| {
            if fail && !batch.is_empty() {
                return Err(StoreError::Stopped("disk gone".into()));
            }
            log.lock().unwrap().extend(batch);
            Ok(false)
        });
        let gc = GroupCommit::start("test-commit", Duration::MAX, tasks_commit, commit).unwrap();
        (gc, seen)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_waits_for_its_batch_without_a_thread() {
        for tasks_commit in [false, true] {
            let (gc, seen) = committer(false, tasks_commit);
            let first = gc.enqueue([1, 2], Waiter::Nobody).unwrap();
            let second = gc.enqueue([3], Waiter::Task).unwrap();
            // Resolves only once the writes up to the ticket are committed.
            gc.durable(second).wait().await.unwrap();
            assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
            gc.durable(first).wait().await.unwrap();
        }
    }

    /// A task that commits its own batch leaves the checkpoint to the
    /// committer, which takes it once writes pause.
    #[tokio::test(flavor = "current_thread")]
    async fn a_task_commits_alone_and_the_committer_checkpoints_after() {
        let (checkpointed, checkpoint) = std::sync::mpsc::channel();
        let writers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&writers);
        let commit: CommitBatch<u32> = Box::new(move |batch, writer| {
            seen.lock().unwrap().push((batch, writer));
            if writer == Writer::Idle {
                checkpointed.send(()).unwrap();
            }
            Ok(writer != Writer::Idle)
        });
        let gc = GroupCommit::start("test-commit", Duration::from_millis(1), true, commit).unwrap();
        let ticket = gc.enqueue([7], Waiter::Task).unwrap();
        gc.durable(ticket).wait().await.unwrap();
        checkpoint.recv_timeout(Duration::from_secs(60)).expect("no checkpoint");
        let writers = writers.lock().unwrap();
        assert_eq!(writers[0], (vec![7], Writer::Task));
        assert_eq!(writers.last().unwrap().1, Writer::Idle);
    }

    /// The committer is signalled only while it sleeps: threads and tasks
    /// that queue while it commits must still have their writes committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_write_is_stranded_while_the_committer_is_busy() {
        for tasks_commit in [false, true] {
            no_write_is_stranded(tasks_commit).await;
        }
    }

    async fn no_write_is_stranded(tasks_commit: bool) {
        let (gc, seen) = committer(false, tasks_commit);
        let gc = Arc::new(gc);
        let (done, finished) = std::sync::mpsc::channel();
        let threads: Vec<_> = (0..3u32)
            .map(|t| {
                let (gc, done) = (Arc::clone(&gc), done.clone());
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let ticket = gc.enqueue([t * 1_000_000 + i], Waiter::Thread).unwrap();
                        gc.wait(ticket).unwrap();
                    }
                    done.send(()).unwrap();
                })
            })
            .collect();
        let tasks: Vec<_> = (0..8u32)
            .map(|t| {
                let gc = Arc::clone(&gc);
                tokio::spawn(async move {
                    for i in 0..500 {
                        let ticket = gc.enqueue([(10 + t) * 1_000_000 + i], Waiter::Task).unwrap();
                        gc.durable(ticket).wait().await.unwrap();
                    }
                })
            })
            .collect();
        let limit = Duration::from_secs(60);
        for task in tasks {
            tokio::time::timeout(limit, task)
                .await
                .expect("a task was stranded")
                .unwrap();
        }
        for _ in 0..threads.len() {
            finished.recv_timeout(limit).expect("a thread was stranded");
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(seen.lock().unwrap().len(), 3 * 2_000 + 8 * 500);
    }

    /// A task dropped before it polled (its call cancelled) still has its
    /// writes committed, by the committer's lazy flush.
    #[test]
    fn a_task_dropped_before_it_polls_still_has_its_writes_committed() {
        let (committed, seen) = std::sync::mpsc::channel();
        let commit: CommitBatch<u32> = Box::new(move |batch, _| {
            batch.into_iter().for_each(|w| committed.send(w).unwrap());
            Ok(false)
        });
        let gc = GroupCommit::start("test-commit", Duration::MAX, true, commit).unwrap();
        let ticket = gc.enqueue([5], Waiter::Task).unwrap();
        drop(gc.durable(ticket));
        assert_eq!(seen.recv_timeout(Duration::from_secs(60)), Ok(5));
    }

    /// A commit that panicked may have left a torn record: nothing is
    /// committed after it, and the store stops.
    #[tokio::test(flavor = "current_thread")]
    async fn a_commit_that_panicked_stops_the_store() {
        let commit: CommitBatch<u32> = Box::new(|batch, _| {
            assert!(!batch.contains(&13), "a commit that panics");
            Ok(false)
        });
        let gc = Arc::new(GroupCommit::start("test-commit", Duration::MAX, true, commit).unwrap());
        let ticket = gc.enqueue([13], Waiter::Task).unwrap();
        let panicking = Arc::clone(&gc);
        let joined = tokio::spawn(async move { panicking.durable(ticket).wait().await }).await;
        assert!(joined.unwrap_err().is_panic());
        let ticket = gc.enqueue([1], Waiter::Task).unwrap();
        let err = gc.durable(ticket).wait().await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert!(gc.check().is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_commit_fails_its_waiting_tasks() {
        for tasks_commit in [false, true] {
            let (gc, _) = committer(true, tasks_commit);
            let ticket = gc.enqueue([1], Waiter::Task).unwrap();
            let err = gc.durable(ticket).wait().await.unwrap_err();
            assert!(err.to_string().contains("disk gone"), "{err}");
            assert!(gc.check().is_err());
        }
    }
}

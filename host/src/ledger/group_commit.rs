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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use super::book_store::Waiter;
use super::error::StoreError;
use super::store::Durable;

/// Commits one batch, in order, as durably as the store acknowledges. It
/// returns whether it left work for a checkpoint (`Dirty`); the committer
/// then calls it with an empty batch once writes pause for the checkpoint
/// interval, and at shutdown.
pub(crate) type CommitBatch<W> = Box<dyn FnMut(Vec<W>) -> Result<Dirty, StoreError> + Send>;

/// Whether a commit left changes only in the write-ahead log.
pub(crate) type Dirty = bool;

/// How long a write nobody waits for may stay queued alone. Not committing it
/// at once keeps it from delaying the urgent write that usually follows
/// (a reservation is followed by its settle).
pub(crate) const LAZY_FLUSH: Duration = Duration::from_millis(5);

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
}

struct Shared<W> {
    queue: Mutex<Queue<W>>,
    /// Wakes the committer: someone waits, or shutdown.
    pending: Condvar,
    /// Every write up to this ticket is durable.
    committed: AtomicU64,
    stopped: AtomicBool,
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
}

pub(crate) struct GroupCommit<W> {
    shared: Arc<Shared<W>>,
    committer: Option<JoinHandle<()>>,
}

impl<W: Send + 'static> GroupCommit<W> {
    /// `checkpoint` is how long a dirty committer waits for more writes
    /// before it asks for a checkpoint.
    pub(crate) fn start(name: &str, checkpoint: Duration, mut commit: CommitBatch<W>) -> Result<Self, std::io::Error> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                writes: Vec::new(),
                waiters: Vec::new(),
                tasks: Vec::new(),
                enqueued: 0,
                failure: None,
                shutting_down: false,
                idle: false,
            }),
            pending: Condvar::new(),
            committed: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let committer = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            let mut dirty = false;
            loop {
                let (batch, waiters, ticket) = {
                    let mut q = worker.lock();
                    while q.waiters.is_empty() && q.tasks.is_empty() && !q.shutting_down {
                        if q.writes.is_empty() {
                            if !dirty {
                                q.idle = true;
                                q = worker.pending.wait(q).unwrap_or_else(PoisonError::into_inner);
                                q.idle = false;
                                continue;
                            }
                            q.idle = true;
                            let (guard, waited) = worker
                                .pending
                                .wait_timeout(q, checkpoint)
                                .unwrap_or_else(PoisonError::into_inner);
                            q = guard;
                            q.idle = false;
                            if waited.timed_out() && q.writes.is_empty() {
                                break;
                            }
                            continue;
                        }
                        q.idle = true;
                        let (guard, waited) = worker
                            .pending
                            .wait_timeout(q, LAZY_FLUSH)
                            .unwrap_or_else(PoisonError::into_inner);
                        q = guard;
                        q.idle = false;
                        if waited.timed_out() && !q.writes.is_empty() {
                            break;
                        }
                    }
                    if q.writes.is_empty() && !dirty {
                        // A task waits only for a write still queued or just
                        // committed; wake any other so none is stranded.
                        q.tasks.drain(..).for_each(|(_, task)| task.wake());
                        if q.shutting_down {
                            return;
                        }
                        continue;
                    }
                    let capacity = q.writes.capacity();
                    let batch = std::mem::replace(&mut q.writes, Vec::with_capacity(capacity));
                    (batch, std::mem::take(&mut q.waiters), q.enqueued)
                };
                // Commit outside the lock: callers keep queueing the next batch meanwhile.
                let result = commit(batch);
                if let Ok(left) = result {
                    dirty = left;
                }
                if let Err(e) = result {
                    tracing::error!(error = %e, "ledger commit failed; the store stops accepting writes");
                    let mut q = worker.lock();
                    q.failure = Some(e);
                    q.shutting_down = true;
                    worker.stopped.store(true, Ordering::Release);
                    let stranded = std::mem::take(&mut q.waiters);
                    let tasks = std::mem::take(&mut q.tasks);
                    drop(q);
                    waiters.iter().chain(&stranded).for_each(Thread::unpark);
                    tasks.into_iter().for_each(|(_, task)| task.wake());
                    return;
                }
                worker.committed.store(ticket, Ordering::Release);
                waiters.iter().for_each(Thread::unpark);
                let done: Vec<Waker> = {
                    let mut q = worker.lock();
                    let (done, waiting) = std::mem::take(&mut q.tasks)
                        .into_iter()
                        .partition(|(t, _)| *t <= ticket);
                    q.tasks = waiting;
                    done.into_iter().map(|(_, task)| task).collect()
                };
                done.into_iter().for_each(Waker::wake);
            }
        })?;
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
        // lazy flush clock for the first write (a task that is dropped
        // before it polls still has its writes flushed). A task wakes it
        // again when it first polls.
        let first_thread = waiter == Waiter::Thread && q.waiters.is_empty();
        if first_thread || before == 0 {
            self.shared.signal(&mut q);
        }
        if waiter == Waiter::Thread {
            q.waiters.push(std::thread::current());
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
        // Wake the committer: a task waiting is as urgent as a parked thread.
        shared.signal(&mut q);
        Poll::Pending
    }
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

    fn committer(fail: bool) -> (GroupCommit<u32>, Arc<Mutex<Vec<u32>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let commit: CommitBatch<u32> = Box::new(move |batch| {
            if fail && !batch.is_empty() {
                return Err(StoreError::Stopped("disk gone".into()));
            }
            log.lock().unwrap().extend(batch);
            Ok(false)
        });
        (GroupCommit::start("test-commit", Duration::MAX, commit).unwrap(), seen)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_task_waits_for_its_batch_without_a_thread() {
        let (gc, seen) = committer(false);
        let first = gc.enqueue([1, 2], Waiter::Nobody).unwrap();
        let second = gc.enqueue([3], Waiter::Task).unwrap();
        // Resolves only once the committer wrote the writes up to the ticket.
        gc.durable(second).wait().await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        gc.durable(first).wait().await.unwrap();
    }

    /// The committer is signalled only while it sleeps: threads and tasks
    /// that queue while it commits must still have their writes committed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_write_is_stranded_while_the_committer_is_busy() {
        let (gc, seen) = committer(false);
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_commit_fails_its_waiting_tasks() {
        let (gc, _) = committer(true);
        let ticket = gc.enqueue([1], Waiter::Task).unwrap();
        let err = gc.durable(ticket).wait().await.unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
        assert!(gc.check().is_err());
    }
}

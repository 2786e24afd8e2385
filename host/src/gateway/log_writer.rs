//! The invocation log's writer: one thread that owns the file.
//!
//! Request tasks hand a record over a bounded channel and go on; the thread
//! serialises it, writes through a buffer, and flushes whenever the channel
//! runs dry, so a burst costs one `write` per batch rather than per call.
//! While calls keep coming the thread drains the channel every 2 ms rather
//! than being woken for each record; a record reaches the file within about
//! 2 ms, and [`LogWriter::flush`] waits for that.
//! When the channel is full (the disk has stalled) a call waits for room:
//! records are never dropped, and a stall slows calls rather than losing
//! their audit trail. The wait is asynchronous ([`LogWriter::append`]): a
//! waiting call holds no runtime thread, so health checks, the admin API
//! and streams keep being served while the disk is stuck. The number of
//! waiting calls is a gauge, and the first wait of each second is logged.
//!
//! Rotation: the file is renamed to `<stem>-<UTC time>-<n>.<ext>` beside it and
//! a new one opened when it reaches `max_bytes`, or when the UTC hour or day
//! changes, as configured. [`rotated_files`] lists them, oldest first.
//!
//! Durability: a record is on disk once [`LogWriter::flush`] returns, which
//! `/admin/idle` and a clean shutdown wait for. A crash (kill -9) can lose the
//! records still queued; the ledger, not this log, is the record of money.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{TryRecvError, TrySendError};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, oneshot};

use super::invocation_log::InvocationRecord;
use crate::config::{LogConfig, RotateEvery};

/// How often a busy writer thread drains the queue.
const POLL: Duration = Duration::from_millis(2);
/// Empty polls in a row (100 ms) after which the thread sleeps until woken.
const IDLE_AFTER: u32 = 50;

/// The period a moment falls in; a change means a new file.
fn period(every: RotateEvery, at: SystemTime) -> u64 {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match every {
        RotateEvery::Never => 0,
        RotateEvery::Hour => secs / 3600,
        RotateEvery::Day => secs / 86_400,
    }
}

enum Message {
    Record(Box<InvocationRecord>),
    Flush(oneshot::Sender<()>),
}

/// Room in the queue, for calls that wait asynchronously.
///
/// A waiter registers for a wake-up, counts itself, and tries once more
/// before it sleeps; the thread wakes one waiter per message it takes off
/// the queue, and only while the count is above zero. A `SeqCst` fence on
/// each side between its two steps means either the thread sees the count
/// or the waiter's retry sees the freed slot: no wake-up is lost, and
/// without waiters the thread pays one fence and one load. One wake-up per
/// freed slot, not one for every waiter: a long stall can leave thousands
/// waiting.
#[derive(Default)]
struct Room {
    freed: Notify,
    waiting: AtomicUsize,
    /// The same count, exported (`tollgate_log_waiting_calls`).
    gauge: Gauge,
}

impl Room {
    /// Called by the thread after it takes a message off the queue.
    fn freed_one(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_one();
        }
    }
}

/// The handle request tasks write through.
pub(crate) struct LogWriter {
    sender: Option<crossbeam_channel::Sender<Message>>,
    room: Arc<Room>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Opens (or creates) `path` for appending and starts the thread.
    pub(crate) fn start(path: PathBuf, settings: &LogConfig) -> std::io::Result<Self> {
        let file = open(&path)?;
        let meta = file.metadata()?;
        let period = period(
            settings.rotate_every,
            meta.modified().unwrap_or_else(|_| SystemTime::now()),
        );
        let (sender, queue) = crossbeam_channel::bounded(settings.queue.max(1));
        let room = Arc::new(Room::default());
        let mut state = Open {
            path,
            settings: settings.clone(),
            out: BufWriter::with_capacity(64 << 10, file),
            written: meta.len(),
            period,
            room: Arc::clone(&room),
        };
        let thread = std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn(move || state.run(&queue))?;
        Ok(LogWriter {
            sender: Some(sender),
            room,
            thread: Some(thread),
        })
    }

    /// Calls waiting for room in the queue right now, as a gauge.
    pub(crate) fn waiting_gauge(&self) -> Gauge {
        self.room.gauge.clone()
    }

    /// Queues a record, blocking the thread while the queue is full: for
    /// callers outside an async runtime. Async code uses [`Self::append`].
    pub(crate) fn write(&self, record: InvocationRecord) {
        if let Some(sender) = &self.sender
            && sender.send(Message::Record(Box::new(record))).is_err()
        {
            tracing::error!("the invocation log writer has stopped; a record was lost");
        }
    }

    /// Queues a record; while the queue is full, waits without holding a
    /// runtime thread.
    pub(crate) async fn append(&self, record: InvocationRecord) {
        self.send(Message::Record(Box::new(record))).await;
    }

    /// Resolves once every record queued before it is written and flushed.
    pub(crate) async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.send(Message::Flush(done)).await {
            let _ = written.await;
        }
    }

    /// Sends `message`, waiting for room; false if the thread has stopped.
    async fn send(&self, message: Message) -> bool {
        let Some(sender) = &self.sender else { return false };
        let mut message = match sender.try_send(message) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return stopped(),
            Err(TrySendError::Full(back)) => back,
        };
        // Counted before the retries below, so the thread cannot miss us.
        self.room.waiting.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.room.gauge.inc();
        if let Some(suppressed) = crate::log_gate::LOG_STALLS.admit("") {
            tracing::warn!(
                suppressed,
                "the invocation log's queue is full: calls wait for the disk (see tollgate_log_waiting_calls)"
            );
        }
        let sent = loop {
            let freed = self.room.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match sender.try_send(message) {
                Ok(()) => break true,
                Err(TrySendError::Disconnected(_)) => break false,
                Err(TrySendError::Full(back)) => message = back,
            }
            freed.await;
        };
        self.room.waiting.fetch_sub(1, Ordering::SeqCst);
        self.room.gauge.dec();
        sent || stopped()
    }
}

fn stopped() -> bool {
    tracing::error!("the invocation log writer has stopped; a record was lost");
    false
}

impl Drop for LogWriter {
    /// Writes what is queued, then stops the thread.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state.
struct Open {
    path: PathBuf,
    /// Rotation and queue settings (`invocations` is `path`'s source).
    settings: LogConfig,
    out: BufWriter<File>,
    written: u64,
    period: u64,
    room: Arc<Room>,
}

impl Open {
    /// Busy, the thread drains the queue every [`POLL`] and never blocks
    /// on it, so a finishing call does not wake it (a wake-up per record
    /// was a tenth of the gateway's CPU at one call at a time). After
    /// [`IDLE_AFTER`] empty polls it blocks until the next message.
    fn run(&mut self, queue: &crossbeam_channel::Receiver<Message>) {
        let mut line = Vec::with_capacity(2048);
        let mut empty_polls = 0u32;
        loop {
            let first = if empty_polls >= IDLE_AFTER {
                match queue.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                }
            } else {
                match queue.try_recv() {
                    Ok(message) => message,
                    Err(TryRecvError::Empty) => {
                        empty_polls += 1;
                        std::thread::sleep(POLL);
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            empty_polls = 0;
            self.take(first, &mut line);
            while let Ok(message) = queue.try_recv() {
                self.take(message, &mut line);
            }
            self.flush();
        }
        self.flush();
    }

    fn take(&mut self, message: Message, line: &mut Vec<u8>) {
        self.room.freed_one();
        match message {
            Message::Record(record) => {
                line.clear();
                if let Err(e) = serde_json::to_writer(&mut *line, &record) {
                    tracing::error!(error = %e, "could not serialise an invocation record");
                    return;
                }
                line.push(b'\n');
                self.rotate_if_due(line.len() as u64);
                match self.out.write_all(line) {
                    Ok(()) => self.written += line.len() as u64,
                    Err(e) => {
                        tracing::error!(error = %e, path = %self.path.display(), "could not write the invocation log")
                    }
                }
            }
            Message::Flush(done) => {
                self.flush();
                let _ = done.send(());
            }
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(error = %e, path = %self.path.display(), "could not write the invocation log");
        }
    }

    fn rotate_if_due(&mut self, next: u64) {
        let now = SystemTime::now();
        let period = period(self.settings.rotate_every, now);
        let full = self.settings.max_bytes > 0 && self.written > 0 && self.written + next > self.settings.max_bytes;
        if period == self.period && !full {
            return;
        }
        self.period = period;
        self.flush();
        let target = rotated_name(&self.path, now);
        let reopened = std::fs::rename(&self.path, &target).and_then(|()| open(&self.path));
        match reopened {
            Ok(file) => {
                self.out = BufWriter::with_capacity(64 << 10, file);
                self.written = 0;
            }
            Err(e) => {
                // Keep writing to the file we have: a record is worth more than a rotation.
                tracing::error!(error = %e, path = %self.path.display(), "could not rotate the invocation log");
            }
        }
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `<stem>-<YYYYMMDDTHHMMSS.mmmZ>-<n>.<ext>` beside `path`, not yet taken;
/// `n` (four digits) orders rotations within one millisecond.
fn rotated_name(path: &Path, at: SystemTime) -> PathBuf {
    let stamp = chrono::DateTime::<chrono::Utc>::from(at).format("%Y%m%dT%H%M%S%.3fZ");
    let (stem, ext) = stem_and_ext(path);
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut n = 0u32;
    loop {
        let candidate = dir.join(format!("{stem}-{stamp}-{n:04}{ext}"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

fn stem_and_ext(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or_else(String::new, |e| format!(".{}", e.to_string_lossy()));
    (stem, ext)
}

/// The files rotated away from `path`, oldest first (their names sort by time).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (stem, ext) = stem_and_ext(path);
    let prefix = format!("{stem}-");
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|rest| rest.ends_with(&ext) && rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    files.sort();
    files
}

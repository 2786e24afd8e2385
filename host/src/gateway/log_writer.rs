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
//!
//! A shutdown does not wait forever for a stalled disk ([`LogWriter::close`]):
//! every record not yet written (queued, waited with, or taken by the thread
//! and not yet taken by the file) is printed on standard error, one line
//! each after [`UNWRITTEN`], and the process exits. A record the file took
//! in part is printed whole, so it may be in both; its request id tells.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{TryRecvError, TrySendError};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, oneshot};

use super::invocation_log::InvocationRecord;
use crate::config::{LogConfig, RotateEvery};

/// Starts each line of standard error that carries a record the log's disk
/// did not take before shutdown; the JSON record follows a space.
pub const UNWRITTEN: &str = "tollgate-unwritten-record";

/// A batch is written once it holds this much, as a buffered writer would.
const BATCH_BYTES: usize = 64 << 10;

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
    /// Set by [`LogWriter::close`] when the disk did not drain in time:
    /// from then on records go to standard error, not to the queue.
    closing: AtomicBool,
    /// What the thread took off the queue and the file has not taken.
    unwritten: Mutex<Unwritten>,
}

/// Lines (each ending in a newline) the thread holds: the batch it fills,
/// and the one it writes with how many of its bytes the file took.
#[derive(Default)]
struct Unwritten {
    filling: Vec<u8>,
    writing: Option<(Arc<Vec<u8>>, usize)>,
}

/// One waiting call, counted while it waits: the count is given back even
/// when its future is dropped (a shutdown that stopped waiting).
struct Waiting<'a>(&'a Room);

impl<'a> Waiting<'a> {
    fn new(room: &'a Room) -> Self {
        room.waiting.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        room.gauge.inc();
        Waiting(room)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.gauge.dec();
    }
}

/// Prints one record's line (with or without its newline) on standard
/// error, after [`UNWRITTEN`].
fn print_unwritten(line: &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    eprintln!("{UNWRITTEN} {}", String::from_utf8_lossy(line));
}

/// Prints every whole line of `bytes` from the one `taken` falls in.
fn print_lines_from(bytes: &[u8], taken: usize) -> usize {
    let start = bytes[..taken.min(bytes.len())]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let mut printed = 0;
    for line in bytes[start..].split_inclusive(|b| *b == b'\n') {
        print_unwritten(line);
        printed += 1;
    }
    printed
}

fn print_record(record: &InvocationRecord) {
    match serde_json::to_vec(record) {
        Ok(line) => print_unwritten(&line),
        Err(e) => tracing::error!(error = %e, "could not serialise an invocation record"),
    }
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
    /// The queue's other end, to empty it at a shutdown the disk stalled.
    queue: crossbeam_channel::Receiver<Message>,
    room: Arc<Room>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Opens (or creates) `path` for appending and starts the thread.
    pub(crate) fn start(path: PathBuf, settings: &LogConfig) -> std::io::Result<Self> {
        let mut file = open(&path)?;
        let torn = drop_torn_tail(&mut file)?;
        if torn > 0 {
            tracing::warn!(
                bytes = torn,
                path = %path.display(),
                "cut a torn last line off the invocation log: part of the record being written when the gateway stopped"
            );
        }
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
            file,
            written: meta.len(),
            filling: 0,
            period,
            room: Arc::clone(&room),
        };
        let thread_queue = queue.clone();
        let thread = std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn(move || state.run(&thread_queue))?;
        Ok(LogWriter {
            sender: Some(sender),
            queue,
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
        if self.room.closing.load(Ordering::SeqCst) {
            print_record(&record);
        } else if let Some(sender) = &self.sender
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
        if self.room.closing.load(Ordering::SeqCst) {
            if let Message::Record(record) = &message {
                print_record(record);
            }
            return false;
        }
        let mut message = match sender.try_send(message) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return stopped(),
            Err(TrySendError::Full(back)) => back,
        };
        // Counted before the retries below, so the thread cannot miss us.
        let _waiting = Waiting::new(&self.room);
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
            // Checked once registered: `close` sets it, then wakes every waiter.
            if self.room.closing.load(Ordering::SeqCst) {
                if let Message::Record(record) = &message {
                    print_record(record);
                }
                return false;
            }
            match sender.try_send(message) {
                Ok(()) => break true,
                Err(TrySendError::Disconnected(_)) => break false,
                Err(TrySendError::Full(back)) => message = back,
            }
            freed.await;
        };
        sent || stopped()
    }

    /// For a shutdown: waits up to `wait` for every queued record to be
    /// written. If the disk has not taken them by then, prints every record
    /// not yet written on standard error (see [`UNWRITTEN`]), and so does
    /// every call still waiting for room or finishing later; the thread is
    /// then left to its stalled write. `None` when the disk took every
    /// record, else the records printed here.
    pub(crate) async fn close(&self, wait: Duration) -> Option<usize> {
        if tokio::time::timeout(wait, self.flush()).await.is_ok() {
            return None;
        }
        let mut printed = 0;
        {
            // Set under the lock the thread adds lines under: every line is
            // either in the batches printed here or printed by the thread.
            let mut unwritten = self.room.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
            self.room.closing.store(true, Ordering::SeqCst);
            if let Some((writing, taken)) = unwritten.writing.take() {
                printed += print_lines_from(&writing, taken);
            }
            printed += print_lines_from(&std::mem::take(&mut unwritten.filling), 0);
        }
        self.room.freed.notify_waiters();
        while let Ok(message) = self.queue.try_recv() {
            if let Message::Record(record) = message {
                print_record(&record);
                printed += 1;
            }
        }
        Some(printed)
    }
}

fn stopped() -> bool {
    tracing::error!("the invocation log writer has stopped; a record was lost");
    false
}

impl Drop for LogWriter {
    /// Writes what is queued, then stops the thread; unless a shutdown
    /// found the disk stalled, when the thread may never come back.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take()
            && !self.room.closing.load(Ordering::SeqCst)
        {
            let _ = thread.join();
        }
    }
}

/// The writer thread's state.
struct Open {
    path: PathBuf,
    /// Rotation and queue settings (`invocations` is `path`'s source).
    settings: LogConfig,
    file: File,
    written: u64,
    /// The length of the batch being filled (only this thread adds to it).
    filling: u64,
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
                let rotate = self.rotation_due(line.len() as u64);
                if rotate.is_some() {
                    self.flush();
                }
                let full = {
                    let mut unwritten = self.room.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
                    if self.room.closing.load(Ordering::SeqCst) {
                        drop(unwritten);
                        print_unwritten(line);
                        return;
                    }
                    unwritten.filling.extend_from_slice(line);
                    self.filling = unwritten.filling.len() as u64;
                    unwritten.filling.len() >= BATCH_BYTES
                };
                // Rotated with the line already kept, so a stalled rename loses nothing.
                if let Some((period, now)) = rotate {
                    self.rotate(period, now);
                }
                if full {
                    self.flush();
                }
            }
            Message::Flush(done) => {
                self.flush();
                let _ = done.send(());
            }
        }
    }

    /// Writes the batch filled so far. The thread writes without the lock,
    /// so a shutdown can read what the file has not taken while it waits.
    fn flush(&mut self) {
        let batch = {
            let mut unwritten = self.room.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
            if unwritten.filling.is_empty() || self.room.closing.load(Ordering::SeqCst) {
                return;
            }
            let batch = Arc::new(std::mem::take(&mut unwritten.filling));
            self.filling = 0;
            unwritten.writing = Some((Arc::clone(&batch), 0));
            batch
        };
        let mut taken = 0;
        while taken < batch.len() {
            match self.file.write(&batch[taken..]) {
                Ok(0) => {
                    tracing::error!(path = %self.path.display(), "could not write the invocation log: the file took nothing");
                    break;
                }
                Ok(n) => {
                    taken += n;
                    let mut unwritten = self.room.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some((_, done)) = unwritten.writing.as_mut() {
                        *done = taken;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(error = %e, path = %self.path.display(), "could not write the invocation log");
                    break;
                }
            }
        }
        self.written += taken as u64;
        let mut unwritten = self.room.unwritten.lock().unwrap_or_else(PoisonError::into_inner);
        unwritten.writing = None;
        // The batch's allocation is reused for the next, as a buffered writer's would be.
        if unwritten.filling.is_empty()
            && let Ok(mut reuse) = Arc::try_unwrap(batch)
        {
            reuse.clear();
            unwritten.filling = reuse;
        }
    }

    /// The period and time to rotate at before `next` bytes, if due.
    fn rotation_due(&self, next: u64) -> Option<(u64, SystemTime)> {
        let now = SystemTime::now();
        let period = period(self.settings.rotate_every, now);
        let written = self.written + self.filling;
        let full = self.settings.max_bytes > 0 && written > 0 && written + next > self.settings.max_bytes;
        (period != self.period || full).then_some((period, now))
    }

    /// Renames the file away and opens a new one; called with the batch
    /// written, so the old file holds every line before the new one's.
    fn rotate(&mut self, period: u64, now: SystemTime) {
        self.period = period;
        let target = rotated_name(&self.path, now);
        let reopened = std::fs::rename(&self.path, &target).and_then(|()| open(&self.path));
        match reopened {
            Ok(file) => {
                self.file = file;
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
    OpenOptions::new().create(true).read(true).append(true).open(path)
}

/// Cuts a torn last line off a log file (part of a record the process was
/// writing when it died, or when its disk stalled), so the next record
/// starts a line of its own. The bytes cut; none for a file that is not a
/// regular one (a pipe).
pub(crate) fn drop_torn_tail(file: &mut File) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = file.metadata()?;
    let len = meta.len();
    if !meta.is_file() || len == 0 {
        return Ok(0);
    }
    let mut chunk = [0u8; 8192];
    let mut pos = len;
    let keep = loop {
        if pos == 0 {
            break 0;
        }
        let n = pos.min(chunk.len() as u64);
        pos -= n;
        let chunk = &mut chunk[..n as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|b| *b == b'\n') {
            break pos + i as u64 + 1;
        }
    };
    if keep < len {
        file.set_len(keep)?;
    }
    Ok(len - keep)
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

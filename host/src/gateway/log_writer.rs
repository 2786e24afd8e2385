//! The invocation log's writer: one thread that owns the file.
//!
//! Request tasks hand a record over a bounded channel and go on; the thread
//! serialises it, writes through a buffer, and flushes whenever the channel
//! runs dry, so a burst costs one `write` per batch rather than per call.
//! When the channel is full (the disk has stalled) a sender waits: records
//! are never dropped, and a stall slows calls rather than losing their
//! audit trail.
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
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::invocation_log::InvocationRecord;
use crate::config::{LogConfig, RotateEvery};

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

/// The handle request tasks write through.
pub(crate) struct LogWriter {
    sender: Option<crossbeam_channel::Sender<Message>>,
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
        let mut state = Open {
            path,
            settings: settings.clone(),
            out: BufWriter::with_capacity(64 << 10, file),
            written: meta.len(),
            period,
        };
        let thread = std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn(move || state.run(&queue))?;
        Ok(LogWriter {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Queues a record; waits only while the queue is full.
    pub(crate) fn write(&self, record: InvocationRecord) {
        if let Some(sender) = &self.sender
            && sender.send(Message::Record(Box::new(record))).is_err()
        {
            tracing::error!("the invocation log writer has stopped; a record was lost");
        }
    }

    /// Resolves once every record queued before it is written and flushed.
    pub(crate) async fn flush(&self) {
        let Some(sender) = &self.sender else { return };
        let (done, written) = oneshot::channel();
        // A full queue is the disk's stall; waiting for room here is waiting for the disk.
        let sender = sender.clone();
        let sent = tokio::task::spawn_blocking(move || sender.send(Message::Flush(done)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = written.await;
        }
    }
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
}

impl Open {
    fn run(&mut self, queue: &crossbeam_channel::Receiver<Message>) {
        let mut line = Vec::with_capacity(2048);
        for message in queue {
            match message {
                Message::Record(record) => {
                    line.clear();
                    if let Err(e) = serde_json::to_writer(&mut line, &record) {
                        tracing::error!(error = %e, "could not serialise an invocation record");
                        continue;
                    }
                    line.push(b'\n');
                    self.rotate_if_due(line.len() as u64);
                    match self.out.write_all(&line) {
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
            if queue.is_empty() {
                self.flush();
            }
        }
        self.flush();
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

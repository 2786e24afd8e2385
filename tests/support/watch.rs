//! Waiting on files another process writes: re-checks a condition each
//! time one of them changes (inotify through `notify`), never on a timer.
//! And waiting on a store's signal the same way, for what happens in process.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

/// Returns `check`'s first `Some`, checked now and after every change to a
/// file in the directories of `files`; panics with `what` after `limit`.
pub async fn until_files<T: Send + 'static>(
    files: Vec<PathBuf>,
    limit: Duration,
    what: &'static str,
    mut check: impl FnMut() -> Option<T> + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || {
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .expect("a file watcher");
        for file in &files {
            let dir = file.parent().expect("a file in a directory");
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .expect("watch the directory");
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = check() {
                return found;
            }
            // Checked on every wake: events may never stop (the check's own
            // reads are events), so the channel alone would never time out.
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && rx.recv_timeout(left).is_ok(),
                "{what} within {limit:?}"
            );
        }
    })
    .await
    .expect("the watching task")
}

/// Returns `check`'s first `Some`, checked now and after every wake of
/// `signal` (registered before each check, so no wake is missed); panics
/// with `what` after `limit`.
pub async fn until_notified<T>(
    signal: &tokio::sync::Notify,
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let waited = tokio::time::timeout(limit, async {
        loop {
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(found) = check() {
                return found;
            }
            woken.await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("{what} within {limit:?}"))
}

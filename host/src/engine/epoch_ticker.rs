//! The one process-wide clock that bounds every policy call.
//!
//! Each store gets its own epoch deadline; a single thread advances the
//! engine's epoch once per millisecond. Cancelling a call never touches the
//! shared epoch: bumping it would cut every other tenant's call short too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::EngineWeak;

/// How often the epoch advances: the resolution of policy deadlines.
pub const TICK: Duration = Duration::from_millis(1);

/// Advances an engine's epoch every [`TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: EngineWeak) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tollgate-epoch".into())
            .spawn(move || {
                // A plain sleep loop never "catches up": after a stall it
                // advances once, not once per missed tick, so a descheduled
                // ticker cannot expire every in-flight call in one burst.
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

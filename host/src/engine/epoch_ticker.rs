//! The one process-wide clock that bounds every policy call.
//!
//! Each store gets its own epoch deadline; a single thread advances the
//! engine's epoch once per millisecond. Cancelling a call never touches the
//! shared epoch: bumping it would cut every other tenant's call short too.
//!
//! The ticker sleeps while no policy runs: every entry into Wasm holds an
//! [`Active`] guard, and after [`LINGER_TICKS`] without one the thread parks
//! until the next guard wakes it. Under steady traffic it never parks, and
//! a guard costs two atomic operations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::EngineWeak;

/// How often the epoch advances: the resolution of policy deadlines.
pub const TICK: Duration = Duration::from_millis(1);

/// Ticks without a running policy before the ticker parks.
pub const LINGER_TICKS: u32 = 100;

struct Shared {
    stop: AtomicBool,
    /// Guards alive: Wasm running (or about to) somewhere.
    active: AtomicUsize,
    /// The ticker is parked, or about to park.
    parked: AtomicBool,
}

/// Advances an engine's epoch every [`TICK`] while policies run, until dropped.
pub struct EpochTicker {
    shared: Arc<Shared>,
    thread: Thread,
    handle: Option<JoinHandle<()>>,
}

/// Held while Wasm runs; see the module documentation.
pub(crate) struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EpochTicker {
    pub fn start(engine: EngineWeak) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
        });
        let state = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("tollgate-epoch".into())
            .spawn(move || {
                let mut idle_ticks = 0u32;
                // A plain sleep loop never "catches up": after a stall it
                // advances once, not once per missed tick, so a descheduled
                // ticker cannot expire every in-flight call in one burst.
                while !state.stop.load(Ordering::Relaxed) {
                    if state.active.load(Ordering::SeqCst) == 0 {
                        idle_ticks = idle_ticks.saturating_add(1);
                    } else {
                        idle_ticks = 0;
                    }
                    if idle_ticks > LINGER_TICKS {
                        // Announce the park, then look again: a guard taken
                        // in between either is seen here or sees `parked`.
                        state.parked.store(true, Ordering::SeqCst);
                        if state.active.load(Ordering::SeqCst) == 0 && !state.stop.load(Ordering::SeqCst) {
                            std::thread::park();
                        }
                        state.parked.store(false, Ordering::SeqCst);
                        idle_ticks = 0;
                        continue;
                    }
                    std::thread::sleep(TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;
        Ok(EpochTicker {
            shared,
            thread: handle.thread().clone(),
            handle: Some(handle),
        })
    }

    /// Marks Wasm as running until the guard drops; wakes a parked ticker.
    pub(crate) fn enter(&self) -> Active<'_> {
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst) {
            self.thread.unpark();
        }
        Active(&self.shared)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_wakes_a_parked_ticker_and_the_epoch_moves_again() {
        let engine = wasmtime::Engine::new(wasmtime::Config::new().epoch_interruption(true)).expect("engine");
        let ticker = EpochTicker::start(engine.weak()).expect("ticker");
        // Idle: the ticker parks after its linger.
        while !ticker.shared.parked.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let _active = ticker.enter();
        while ticker.shared.parked.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        assert_eq!(ticker.shared.active.load(Ordering::SeqCst), 1);
    }
}

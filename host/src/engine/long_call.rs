//! Telling a thread's owner that the policy it runs has run long.
//!
//! A thread that runs policies may install a hook: after `after_ticks` of a
//! call (epoch ticks, milliseconds) the engine calls it once, from the
//! running thread, and the call goes on to its full deadline. The decision
//! pool uses this to move a spinning policy off its normal-priority
//! threads while it still runs (see `registry::pool`). Threads without a
//! hook (async workers, embedders) are not affected.

use std::cell::RefCell;

/// A thread's hook; see the module documentation.
pub struct LongCallHook {
    pub after_ticks: u64,
    pub on_long: Box<dyn FnMut()>,
}

thread_local! {
    static HOOK: RefCell<Option<LongCallHook>> = const { RefCell::new(None) };
}

/// Installs (or, with `None`, removes) the calling thread's hook.
pub fn set_hook(hook: Option<LongCallHook>) {
    HOOK.with(|h| *h.borrow_mut() = hook);
}

/// The first slice of a call's deadline: up to the hook's point, if the
/// thread has a hook that comes first.
pub(crate) fn first_slice(deadline_ticks: u64) -> u64 {
    HOOK.with(|h| match &*h.borrow() {
        Some(hook) if hook.after_ticks < deadline_ticks => hook.after_ticks.max(1),
        _ => deadline_ticks,
    })
}

/// Runs the thread's hook, if it has one.
pub(crate) fn fire() {
    HOOK.with(|h| {
        if let Some(hook) = h.borrow_mut().as_mut() {
            (hook.on_long)();
        }
    });
}

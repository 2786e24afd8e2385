//! A call that outlives its caller. A call that reached Bedrock must be
//! settled and logged even when the caller goes away (a closed connection
//! drops the server's future mid-call). Spawning every call as a task of
//! its own would guarantee that, at the price of a task, a copy of the
//! call's state and a cross-task wake-up per call. Instead the call runs
//! inline in the caller's task, boxed, and only a call dropped before it
//! completed is handed, still pinned in its box, to a task of its own.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs `F` to completion: polled by its caller while the caller waits,
/// and on a task of its own once the caller drops it unfinished. Must be
/// created inside a Tokio runtime, which runs what the caller leaves.
pub(crate) struct Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    call: Option<Pin<Box<F>>>,
    runtime: tokio::runtime::Handle,
}

impl<F> Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// Panics outside a Tokio runtime, as `tokio::spawn` does.
    pub(crate) fn new(call: F) -> Self {
        Detachable {
            call: Some(Box::pin(call)),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// What a detachable call ends in: its output, or the panic that stopped
/// it, so a bug in one call answers that call and stops nothing else.
pub(crate) type Finished<T> = Result<T, Box<dyn std::any::Any + Send>>;

/// The text a panic was raised with, where it has one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text
    } else {
        "a panic without a message"
    }
}

impl<F> Future for Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Finished<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(call) = self.call.as_mut() else {
            panic!("a detachable call was polled after it completed");
        };
        // The call is dropped once it panicked: its state is not to be resumed.
        match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => {
                self.call = None;
                Poll::Ready(Ok(output))
            }
            Err(panic) => {
                self.call = None;
                Poll::Ready(Err(panic))
            }
        }
    }
}

impl<F> Drop for Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        // Only the box moves; the call stays pinned where it is. A runtime
        // shutting down drops the call unrun, as it drops every task.
        if let Some(call) = self.call.take() {
            drop(self.runtime.spawn(call));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn a_call_awaited_to_the_end_answers_its_caller() {
        let out = Detachable::new(async { 7 }).await;
        assert_eq!(out.ok(), Some(7));
    }

    #[tokio::test]
    async fn a_call_dropped_midway_finishes_on_a_task_of_its_own() {
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<&str>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let mut call = Box::pin(Detachable::new(async move {
            let _ = started_tx.send(());
            go_rx.await.expect("the test lets the call go on");
            let _ = done_tx.send("settled");
        }));
        // Poll it once, as a server does before the caller hangs up.
        let pending = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await;
        assert!(pending);
        started_rx.await.expect("the call started");
        drop(call);
        go_tx.send(()).expect("the detached call still waits");
        assert_eq!(done_rx.await.expect("the detached call finished"), "settled");
    }

    #[tokio::test]
    async fn a_call_dropped_before_it_was_polled_still_runs() {
        let (done_tx, done_rx) = oneshot::channel::<u8>();
        drop(Detachable::new(async move {
            let _ = done_tx.send(1);
        }));
        assert_eq!(done_rx.await.ok(), Some(1));
    }

    #[tokio::test]
    async fn a_call_that_panics_answers_with_the_panic_and_stops_nothing() {
        let failed = Detachable::new(async {
            if std::hint::black_box(true) {
                panic!("a bug in one call");
            }
            1
        })
        .await;
        let panic = failed.expect_err("the panic comes back");
        assert_eq!(panic_message(panic.as_ref()), "a bug in one call");
        assert_eq!(Detachable::new(async { 2 }).await.ok(), Some(2));
    }
}

//! A ConverseStream answer carried from the upstream to the caller frame
//! by frame. The call is charged and logged before the caller sees the
//! final metadata frame (or the failure frame). When the caller leaves, the
//! stream is read on, unsent, to its metadata event within `stream-drain-ms`,
//! so the call is charged its real usage; a stream that ends without usage
//! (the upstream broke off, the drain ran out) is charged at its hold, and
//! dropping the upstream body stops the generation.
//!
//! A caller that stays connected but stops reading is treated as gone once
//! a frame has waited `stream-idle-timeout-ms` for it (or the stream
//! reached `stream-max-ms`): its stream is cut with an error and the
//! upstream read on as for a caller that left. Otherwise the pump would
//! wait on it for good, and the call's hold would expire under a call that
//! Bedrock ran and bills.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::mpsc;

use super::settlement::{CallBasis, Hold, Settlement};
use super::trace::{Trace, millis};
use crate::pricing::Metered;
use crate::upstream::bedrock::UpstreamStream;
use crate::upstream::eventstream;

/// Carries a stream from the upstream to the caller, frame by frame, and
/// settles when it ends, however it ends.
pub(super) struct StreamPump {
    pub(super) settlement: Arc<Settlement>,
    pub(super) hold: Hold,
    pub(super) call: CallBasis,
    pub(super) trace: Trace,
    pub(super) upstream_started: Instant,
    pub(super) idle: Duration,
    /// The stream is cut at `upstream_started + max`, so the call ends before its hold can expire.
    pub(super) max: Duration,
    /// How long to keep reading after the caller left, to charge the real
    /// usage from the metadata event; zero charges the hold at once.
    pub(super) drain: Duration,
    /// Set when the caller is given up on: its frames end with an error.
    pub(super) cut: Arc<AtomicBool>,
}

/// The caller's side of a pumped stream: the frames as the pump sends them,
/// ending with an error (the connection is aborted) once the pump cut it, so
/// a caller that was given up on never mistakes a cut stream for a whole one.
pub(super) fn caller_frames(
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    cut: Arc<AtomicBool>,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send {
    futures_util::stream::unfold(Some((rx, cut)), |state| async move {
        let (mut rx, cut) = state?;
        let item = if cut.load(Ordering::Acquire) {
            None
        } else {
            rx.recv().await
        };
        match item {
            Some(item) => Some((item, Some((rx, cut)))),
            None if cut.load(Ordering::Acquire) => Some((
                Err(io::Error::other(
                    "tollgate cut the stream: the caller stopped reading it",
                )),
                None,
            )),
            None => None,
        }
    })
}

/// How a stream ended.
enum StreamEnd {
    /// The upstream's metadata event arrived (and was charged).
    Complete,
    /// The caller went away, or stopped reading.
    CallerGone,
    /// The upstream sent an exception frame, broke off, or sent garbage.
    UpstreamFailed(String),
}

impl StreamPump {
    pub(super) async fn run(mut self, mut upstream: UpstreamStream, tx: mpsc::Sender<Result<Bytes, io::Error>>) {
        let mut tx = Some(tx);
        // Why the caller is no longer sent frames, once it is not.
        let mut caller_left: Option<String> = None;
        let mut buf = BytesMut::new();
        // The frame that ends a failed stream, sent after the charge.
        let mut final_frame: Option<Bytes> = None;
        let cut_at = tokio::time::Instant::from_std(self.upstream_started) + self.max;
        // Set when the caller went away: the stream is read on, unsent, until then.
        let mut drain_until: Option<tokio::time::Instant> = None;
        let end = 'pump: loop {
            let idle_at = tokio::time::Instant::now() + self.idle;
            let deadline = idle_at.min(cut_at).min(drain_until.unwrap_or(cut_at));
            let chunk = match tokio::time::timeout_at(deadline, upstream.next_chunk()).await {
                Err(_) if drain_until.is_some_and(|d| d <= idle_at.min(cut_at)) => break StreamEnd::CallerGone,
                Err(_) if idle_at >= cut_at => {
                    break StreamEnd::UpstreamFailed(format!(
                        "the stream ran longer than stream-max-ms ({} ms) and was cut",
                        self.max.as_millis()
                    ));
                }
                Err(_) => {
                    break StreamEnd::UpstreamFailed(format!(
                        "the upstream sent nothing for {} ms",
                        self.idle.as_millis()
                    ));
                }
                Ok(None) => {
                    break StreamEnd::UpstreamFailed("the upstream closed the stream before its metadata event".into());
                }
                Ok(Some(Err(e))) => break StreamEnd::UpstreamFailed(format!("the upstream stream broke: {e}")),
                Ok(Some(Ok(chunk))) => chunk,
            };
            buf.extend_from_slice(&chunk);
            loop {
                let (raw, frame) = match eventstream::split_frame(&mut buf) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => break 'pump StreamEnd::UpstreamFailed(e.to_string()),
                };
                let is_metadata = frame.message_type == "event" && frame.kind == "metadata";
                if is_metadata {
                    // Charge before the caller sees the end of its stream.
                    if let Some(left) = &caller_left {
                        self.trace.reason = format!(
                            "{}; {left}, and the stream was read to its end to charge its real usage",
                            self.trace.reason
                        );
                    }
                    let metered = Metered::from_response(&frame.payload, self.call.asked);
                    self.trace.upstream_ms = millis(self.upstream_started.elapsed());
                    self.settlement
                        .charge(&self.hold, metered, &self.call, &mut self.trace)
                        .await;
                    self.trace.logged = false;
                    self.settlement.finish(&mut self.trace).await;
                    // Whether or not the caller is still there, the call is done.
                    self.send_last(&mut tx, raw).await;
                    break 'pump StreamEnd::Complete;
                }
                if frame.message_type != "event" {
                    // Held back until the call is charged and logged, like a metadata frame.
                    let message = frame.payload.get("message").and_then(Value::as_str).unwrap_or_default();
                    self.trace.error_type = Some(frame.kind.clone());
                    final_frame = Some(raw);
                    break 'pump StreamEnd::UpstreamFailed(format!(
                        "the upstream sent {} {}: {message}",
                        frame.message_type, frame.kind
                    ));
                }
                let Some(sender) = tx.as_ref() else { continue };
                // A caller that does not take a frame within the idle bound is
                // as good as gone; waiting on it longer could outlast the hold.
                let offered = tokio::time::Instant::now();
                let send_by = (offered + self.idle).min(cut_at);
                let left = match tokio::time::timeout_at(send_by, sender.send(Ok(raw))).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) => "the caller disconnected".to_owned(),
                    Err(_) => {
                        self.cut_caller(&mut tx);
                        format!(
                            "the caller stopped reading (a frame waited {} ms for it; its stream was cut)",
                            offered.elapsed().as_millis()
                        )
                    }
                };
                tx = None;
                caller_left = Some(left);
                if self.drain.is_zero() {
                    break 'pump StreamEnd::CallerGone;
                }
                // Read on to the metadata event, within the bound: the exact bill.
                drain_until = Some(tokio::time::Instant::now() + self.drain);
            }
        };
        // Dropping the upstream body here closes its connection: no more tokens are generated for nobody.
        drop(upstream);
        match end {
            StreamEnd::Complete => {}
            StreamEnd::CallerGone | StreamEnd::UpstreamFailed(_) => {
                let why = match &end {
                    StreamEnd::CallerGone => format!(
                        "{} before the stream ended",
                        caller_left.as_deref().unwrap_or("the caller disconnected")
                    ),
                    StreamEnd::UpstreamFailed(why) => why.clone(),
                    StreamEnd::Complete => String::new(),
                };
                if let Some(suppressed) = crate::log_gate::HOLD_CHARGES.admit(self.hold.tenant.as_str()) {
                    tracing::warn!(tenant = %self.hold.tenant, request_id = %self.trace.request_id, reason = %crate::text::escape_controls(&why), suppressed, "stream ended without usage");
                }
                if let StreamEnd::UpstreamFailed(_) = &end
                    && final_frame.is_none()
                {
                    // Tell the caller the stream failed, as Bedrock would.
                    let frame = eventstream::encode_exception(
                        "internalServerException",
                        &format!("tollgate: {why}; the call was charged at its reserved worst case"),
                    );
                    final_frame = frame.ok();
                    self.trace.error_type = Some("internalServerException".into());
                }
                self.trace.upstream_ms = millis(self.upstream_started.elapsed());
                self.trace.reason = format!("{}; {why}", self.trace.reason);
                self.settlement
                    .charge(&self.hold, Err(why), &self.call, &mut self.trace)
                    .await;
                self.trace.logged = false;
                self.settlement.finish(&mut self.trace).await;
                if let Some(frame) = final_frame {
                    self.send_last(&mut tx, frame).await;
                }
            }
        }
    }

    /// Sends the frame that ends the stream, after the call was charged; a
    /// caller that does not take it within the idle bound is cut.
    async fn send_last(&self, tx: &mut Option<mpsc::Sender<Result<Bytes, io::Error>>>, frame: Bytes) {
        let Some(sender) = tx.as_ref() else { return };
        if tokio::time::timeout(self.idle, sender.send(Ok(frame))).await.is_err() {
            self.cut_caller(tx);
        }
    }

    /// Gives up on the caller: its frames end with an error once it reads
    /// again (or its connection closes), and none is sent any more.
    fn cut_caller(&self, tx: &mut Option<mpsc::Sender<Result<Bytes, io::Error>>>) {
        self.cut.store(true, Ordering::Release);
        // Dropping the sender wakes a receiver waiting for a frame, to see the cut.
        *tx = None;
    }
}

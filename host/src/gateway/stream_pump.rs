//! A ConverseStream answer carried from the upstream to the caller frame
//! by frame. The call is charged and logged before the caller sees the
//! final metadata frame (or the failure frame). When the caller leaves, the
//! stream is read on, unsent, to its metadata event within `stream-drain-ms`,
//! so the call is charged its real usage; a stream that ends without usage
//! (the upstream broke off, the drain ran out) is charged at its hold, and
//! dropping the upstream body stops the generation.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
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
}

/// How a stream ended.
enum StreamEnd {
    /// The upstream's metadata event arrived (and was charged).
    Complete,
    /// The caller went away.
    CallerGone,
    /// The upstream sent an exception frame, broke off, or sent garbage.
    UpstreamFailed(String),
}

impl StreamPump {
    pub(super) async fn run(mut self, mut upstream: UpstreamStream, tx: mpsc::Sender<Result<Bytes, io::Error>>) {
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
                    if drain_until.is_some() {
                        self.trace.reason = format!(
                            "{}; the caller disconnected, and the stream was read to its end to charge its real usage",
                            self.trace.reason
                        );
                    }
                    let metered = Metered::from_response(&frame.payload, self.call.asked);
                    self.trace.upstream_ms = millis(self.upstream_started.elapsed());
                    self.settlement
                        .charge(&self.hold, metered, &self.call, &mut self.trace)
                        .await;
                    self.trace.logged = false;
                    self.settlement.finish(&self.trace).await;
                    // Whether or not the caller is still there, the call is done.
                    let _ = tx.send(Ok(raw)).await;
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
                if drain_until.is_none() && tx.send(Ok(raw)).await.is_err() {
                    if self.drain.is_zero() {
                        break 'pump StreamEnd::CallerGone;
                    }
                    // Read on to the metadata event, within the bound: the exact bill.
                    drain_until = Some(tokio::time::Instant::now() + self.drain);
                }
            }
        };
        // Dropping the upstream body here closes its connection: no more tokens are generated for nobody.
        drop(upstream);
        match end {
            StreamEnd::Complete => {}
            StreamEnd::CallerGone | StreamEnd::UpstreamFailed(_) => {
                let why = match &end {
                    StreamEnd::CallerGone => "the caller disconnected before the stream ended".to_owned(),
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
                self.settlement.finish(&self.trace).await;
                if let Some(frame) = final_frame {
                    let _ = tx.send(Ok(frame)).await;
                }
            }
        }
    }
}

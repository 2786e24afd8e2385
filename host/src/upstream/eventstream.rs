//! AWS event-stream framing for ConverseStream responses.
//!
//! Bedrock streams `application/vnd.amazon.eventstream`: binary frames, each a
//! prelude (total length, headers length, CRC32), typed headers, a JSON payload
//! and a message CRC32. The framing and checksums come from
//! `aws-smithy-eventstream`, the same code the AWS SDKs decode with, so what we
//! write is what the SDK reads.

use aws_smithy_eventstream::frame::{read_message_from, write_message_to};
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde_json::{Value, json};

/// Content type of a ConverseStream HTTP response body.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// A frame could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("event-stream framing: {0}")]
pub struct FrameError(String);

/// One ConverseStream event, with the payload fields Bedrock sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    MessageStart {
        role: String,
    },
    ContentBlockDelta {
        content_block_index: u32,
        text: String,
    },
    ContentBlockStop {
        content_block_index: u32,
    },
    MessageStop {
        stop_reason: String,
    },
    /// The final event: `usage`, and how the call was served (`serviceTier`,
    /// `performanceConfig`) when known.
    Metadata {
        fields: serde_json::Map<String, Value>,
        latency_ms: u64,
    },
}

impl StreamEvent {
    /// The `:event-type` header value, as Bedrock names it.
    pub fn event_type(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "messageStart",
            StreamEvent::ContentBlockDelta { .. } => "contentBlockDelta",
            StreamEvent::ContentBlockStop { .. } => "contentBlockStop",
            StreamEvent::MessageStop { .. } => "messageStop",
            StreamEvent::Metadata { .. } => "metadata",
        }
    }

    /// The JSON payload of the frame.
    pub fn payload(&self) -> Value {
        match self {
            StreamEvent::MessageStart { role } => json!({ "role": role }),
            StreamEvent::ContentBlockDelta {
                content_block_index,
                text,
            } => json!({ "delta": { "text": text }, "contentBlockIndex": content_block_index }),
            StreamEvent::ContentBlockStop { content_block_index } => {
                json!({ "contentBlockIndex": content_block_index })
            }
            StreamEvent::MessageStop { stop_reason } => json!({ "stopReason": stop_reason }),
            StreamEvent::Metadata { fields, latency_ms } => {
                let mut payload = fields.clone();
                payload.insert("metrics".into(), json!({ "latencyMs": latency_ms }));
                Value::Object(payload)
            }
        }
    }

    /// The complete binary frame for this event.
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        encode_event(self.event_type(), &self.payload())
    }
}

/// Frames an event of any type (e.g. `contentBlockStart` for tool use, or an
/// event forwarded verbatim from upstream) with a JSON payload.
pub fn encode_event(event_type: &str, payload: &Value) -> Result<Bytes, FrameError> {
    let headers = vec![
        string_header(":event-type", event_type),
        string_header(":content-type", "application/json"),
        string_header(":message-type", "event"),
    ];
    encode(headers, payload)
}

/// Frames a modelled exception such as `throttlingException`,
/// `internalServerException` or `modelStreamErrorException`; the SDK surfaces
/// it as an error from the stream's `recv()`.
pub fn encode_exception(exception_type: &str, message: &str) -> Result<Bytes, FrameError> {
    let headers = vec![
        string_header(":exception-type", exception_type),
        string_header(":content-type", "application/json"),
        string_header(":message-type", "exception"),
    ];
    encode(headers, &json!({ "message": message }))
}

/// A frame read back: its string headers and JSON payload. For tests and for
/// reading an upstream stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedFrame {
    pub message_type: String,
    /// `:event-type` for events, `:exception-type` for exceptions.
    pub kind: String,
    pub payload: Value,
}

/// Reads every complete frame in `bytes`; a truncated or corrupt frame is an error.
pub fn decode_all(mut bytes: &[u8]) -> Result<Vec<DecodedFrame>, FrameError> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let message = read_message_from(&mut bytes).map_err(|e| FrameError(e.to_string()))?;
        let (message_type, kind) = message_kind(&message);
        let payload = serde_json::from_slice(message.payload()).map_err(|e| FrameError(e.to_string()))?;
        frames.push(DecodedFrame {
            message_type,
            kind,
            payload,
        });
    }
    Ok(frames)
}

/// Largest frame accepted from an upstream stream.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Takes the next complete frame off the front of `buf`, as it arrived (raw
/// bytes, to forward unchanged) and decoded (to read usage and errors).
/// `Ok(None)` means more bytes are needed.
pub fn split_frame(buf: &mut bytes::BytesMut) -> Result<Option<(Bytes, DecodedFrame)>, FrameError> {
    let Some(prelude) = buf.get(..4) else {
        return Ok(None);
    };
    let total = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
    if !(16..=MAX_FRAME_BYTES).contains(&total) {
        return Err(FrameError(format!(
            "an event-stream frame claims {total} bytes; frames are 16 to {MAX_FRAME_BYTES} bytes"
        )));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let raw = buf.split_to(total).freeze();
    let mut reader: &[u8] = &raw;
    let message = read_message_from(&mut reader).map_err(|e| FrameError(e.to_string()))?;
    let (message_type, kind) = message_kind(&message);
    let frame = DecodedFrame {
        message_type,
        kind,
        payload: serde_json::from_slice(message.payload()).unwrap_or(Value::Null),
    };
    Ok(Some((raw, frame)))
}

/// `:message-type`, and the event type, exception type or error code.
fn message_kind(message: &Message) -> (String, String) {
    let header = |name: &str| {
        message
            .headers()
            .iter()
            .find(|h| h.name().as_str() == name)
            .and_then(|h| h.value().as_string().ok())
            .map(|s| s.as_str().to_owned())
    };
    let kind = header(":event-type")
        .or_else(|| header(":exception-type"))
        .or_else(|| header(":error-code"))
        .unwrap_or_default();
    (header(":message-type").unwrap_or_default(), kind)
}

fn string_header(name: &'static str, value: &str) -> Header {
    Header::new(name, HeaderValue::String(value.to_owned().into()))
}

fn encode(headers: Vec<Header>, payload: &Value) -> Result<Bytes, FrameError> {
    // Serialising a `Value` cannot fail; the framing can (oversized payload).
    let body = serde_json::to_vec(payload).map_err(|e| FrameError(e.to_string()))?;
    let message = Message::new_from_parts(headers, body);
    let mut out = Vec::with_capacity(message.payload().len() + 128);
    write_message_to(&message, &mut out).map_err(|e| FrameError(e.to_string()))?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_the_smithy_decoder() {
        let events = [
            StreamEvent::MessageStart {
                role: "assistant".into(),
            },
            StreamEvent::ContentBlockDelta {
                content_block_index: 0,
                text: "Hello".into(),
            },
            StreamEvent::ContentBlockStop { content_block_index: 0 },
            StreamEvent::MessageStop {
                stop_reason: "end_turn".into(),
            },
            StreamEvent::Metadata {
                fields: json!({"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                latency_ms: 7,
            },
        ];
        let mut wire = Vec::new();
        for e in &events {
            wire.extend_from_slice(&e.encode().unwrap());
        }
        wire.extend_from_slice(&encode_exception("throttlingException", "slow down").unwrap());
        let frames = decode_all(&wire).unwrap();
        assert_eq!(frames.len(), 6);
        for (frame, event) in frames.iter().zip(&events) {
            assert_eq!(frame.message_type, "event");
            assert_eq!(frame.kind, event.event_type());
            assert_eq!(frame.payload, event.payload());
        }
        assert_eq!(frames[4].payload["usage"]["totalTokens"], 5);
        assert_eq!(frames[5].message_type, "exception");
        assert_eq!(frames[5].kind, "throttlingException");
        assert_eq!(frames[5].payload["message"], "slow down");
    }

    #[test]
    fn a_corrupted_frame_is_refused() {
        let mut wire = StreamEvent::MessageStop {
            stop_reason: "end_turn".into(),
        }
        .encode()
        .unwrap()
        .to_vec();
        let last = wire.len() - 5;
        wire[last] ^= 0xff;
        assert!(decode_all(&wire).is_err());
        assert!(decode_all(&wire[..10]).is_err());
    }
}

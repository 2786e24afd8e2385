//! Talking to Bedrock: event-stream framing and the built-in mock.

#[path = "upstream/eventstream.rs"]
pub mod eventstream;
#[path = "upstream/mock.rs"]
pub mod mock;

//! Talking to Bedrock: the forwarding client, event-stream framing and the built-in mock.

#[path = "upstream/bedrock.rs"]
pub mod bedrock;

#[path = "upstream/eventstream.rs"]
pub mod eventstream;
#[path = "upstream/mock.rs"]
pub mod mock;

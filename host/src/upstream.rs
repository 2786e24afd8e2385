//! Talking to Bedrock: the forwarding client, event-stream framing and the built-in mock.

#[cfg(feature = "bedrock")]
pub mod bedrock;
pub mod error;
pub mod eventstream;
#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "bedrock")]
mod sigv4;

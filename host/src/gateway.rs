//! The gateway's request path: who is calling, and what reaches Bedrock.

pub mod auth;
pub mod metadata;

//! What the host offers a policy: logging and price look-ups. Nothing else
//! exists inside the sandbox (no files, network, clock or randomness).

use crate::bindings::tollgate::policy::host as imports;
use crate::{LogLevel, ModelPrice};

/// Standard on-demand price of `model_id` (nano-dollars per million
/// tokens), or `None` when the host does not know the model. This call's own
/// tier and options are priced in `request.requested` and
/// `request.downgrade_chain`.
pub fn price(model_id: &str) -> Option<ModelPrice> {
    imports::price(model_id)
}

/// Writes to the host log, tagged with tenant and policy version. The host
/// keeps at most 16 messages of 1024 bytes per decision.
pub fn log(level: LogLevel, message: &str) {
    imports::log(level, message);
}

pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}

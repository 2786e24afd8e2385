//! How a policy call can fail inside the sandbox. The engine reports these;
//! what a tenant's decision becomes then is the registry's business
//! (`registry::decision`).

use std::fmt;

/// How a policy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Ran past its deadline.
    Timeout,
    /// Tried to grow memory past its cap.
    MemoryLimit,
    /// Recursed past the stack limit.
    StackOverflow,
    /// Trapped (a panic, `unreachable`, an out-of-bounds access, ...).
    Trap,
    /// Returned more than the contract allows (reason, metadata, ids).
    OversizedOutput,
    /// Returned something the contract forbids (bad metadata characters).
    InvalidOutput,
    /// No instance or decision thread was free in time (engine at capacity,
    /// or the tenant's share of the decision pool busy).
    Capacity,
    /// Not run: the policy failed its recent calls and its circuit breaker is open.
    CircuitOpen,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::StackOverflow => "stack-overflow",
            FailureKind::Trap => "trap",
            FailureKind::OversizedOutput => "oversized-output",
            FailureKind::InvalidOutput => "invalid-output",
            FailureKind::Capacity => "capacity",
            FailureKind::CircuitOpen => "circuit-open",
        }
    }
}

/// Where a failure's detail goes on with what the guest wrote to its
/// stdout and stderr (escaped, `\n` between lines).
pub const GUEST_OUTPUT: &str = "; the policy wrote: ";

/// A policy failure, with enough detail for the operator to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    pub kind: FailureKind,
    pub detail: String,
}

impl fmt::Display for PolicyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl std::error::Error for PolicyFailure {}

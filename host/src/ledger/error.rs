//! What can go wrong in the ledger, with the figures that explain it.

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::reservation::ReservationId;

/// Why a reservation was refused. Only one limit is named: the budget first
/// (waiting does not help), then tokens per minute, then requests per minute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error(
        "budget exceeded: this call needs up to {requested} but the period's limit is {limit}, with {spent} spent \
         and {reserved} held for calls in flight ({available} available); the budget resets at {period_end_ms} ms \
         (Unix time), or lower the call's max output tokens, or raise the budget",
        available = limit.saturating_sub(spent.saturating_add(*reserved))
    )]
    Budget {
        limit: NanoUsd,
        spent: NanoUsd,
        reserved: NanoUsd,
        requested: NanoUsd,
        period_end_ms: u64,
    },

    #[error(
        "tokens-per-minute limit exceeded: this call needs up to {requested} tokens but the limit is {limit} \
         and {used} are already counted this minute; {advice}",
        advice = if requested > limit {
            "no single call may exceed the limit: lower the call's max output tokens or raise the TPM limit".to_string()
        } else {
            format!("retry in {retry_after_ms} ms")
        }
    )]
    Tpm {
        limit: u64,
        used: u64,
        requested: u64,
        retry_after_ms: u64,
    },

    #[error(
        "requests-per-minute limit exceeded: {used} of {limit} requests already made this minute; \
         retry in {retry_after_ms} ms"
    )]
    Rpm { limit: u32, used: u32, retry_after_ms: u64 },

    #[error("tenant {tenant} has no ledger limits; set them (Ledger::set_limits) before it makes calls")]
    UnknownTenant { tenant: TenantId },

    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a settle, release or look-up failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("tenant {tenant} has no ledger limits; set them (Ledger::set_limits) first")]
    UnknownTenant { tenant: TenantId },

    #[error(
        "reservation {id} of tenant {tenant} is not open: it was never made for this tenant, or it was already \
         settled or released; nothing was changed"
    )]
    UnknownReservation { tenant: TenantId, id: ReservationId },

    #[error(
        "reservation {id} of tenant {tenant} expired at {expired_at_ms} ms (Unix time) before it was settled or \
         released; its hold was returned and nothing was charged. Raise the reservation TTL above the longest call"
    )]
    Expired {
        tenant: TenantId,
        id: ReservationId,
        expired_at_ms: u64,
    },

    /// The store did not answer after the call ran; the charge is kept in
    /// this process and written as soon as the store answers again.
    #[error(
        "reservation {id} of tenant {tenant}: the ledger store did not answer ({detail}); the charge of {charge} is \
         kept and will be written when it answers"
    )]
    Deferred {
        tenant: TenantId,
        id: ReservationId,
        charge: NanoUsd,
        detail: String,
    },

    /// The store did not answer a release; it is kept in this process (and
    /// its journal) and written as soon as the store answers again. Nothing
    /// is charged: until then the hold only lowers what the tenant may spend.
    #[error(
        "reservation {id} of tenant {tenant}: the ledger store did not answer ({detail}); its release is kept and \
         will be written when it answers, and nothing is charged"
    )]
    ReleaseDeferred {
        tenant: TenantId,
        id: ReservationId,
        detail: String,
    },

    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store itself failed: a database error, or a store that stopped after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("ledger database {path}: {action} failed: {detail}; check the disk and the file's permissions")]
    Database {
        path: String,
        action: &'static str,
        detail: String,
    },

    #[error(
        "the ledger database stopped accepting writes after an earlier failure ({0}); charges since then may not be \
         durable: fix the cause and restart to reopen it"
    )]
    Stopped(String),

    #[error(
        "the ledger store {store} did not answer: {detail}; calls that need it are refused until it does, and it \
         is retried without a restart"
    )]
    Unavailable { store: String, detail: String },

    #[error("the ledger store {store} refused {action}: {detail}")]
    Remote {
        store: String,
        action: &'static str,
        detail: String,
    },
}

//! Reservations: the worst-case hold taken before a call, and what closes it.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::money::NanoUsd;

/// Names one reservation; unique for the life of a store (across restarts for
/// the durable one), so settling twice can never charge twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReservationId(pub u64);

/// The bit of ids a replica's local allowance issues (see the Redis store);
/// the ledger's own ids never reach it.
pub(crate) const LOCAL_BIT: u64 = 1 << 63;

impl ReservationId {
    /// Issued by a replica's local allowance while its shared ledger was
    /// away: unique within that process only, so it names no hold elsewhere.
    pub fn is_local(self) -> bool {
        self.0 & LOCAL_BIT != 0
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a call may cost at most, asked for before it is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReserveRequest {
    /// Estimated input plus max output tokens at the chosen model's price:
    /// the hold, and what a call that fails after the send is charged.
    pub cost: NanoUsd,
    /// The most the call can cost whatever the estimate's error (e.g. every
    /// byte of the prompt a token), when that is above `cost`. Admission
    /// counts every open call at its ceiling, so settles of calls whose
    /// estimate came in low can never pass the budget; `None` is `cost`.
    pub ceiling: Option<NanoUsd>,
    /// Estimated input plus max output tokens, counted against TPM.
    pub tokens: u64,
    pub now_ms: u64,
}

/// A granted hold. Settle or release it by `id`; otherwise it expires at
/// `expires_at_ms` and its hold is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub cost: NanoUsd,
    pub tokens: u64,
    pub expires_at_ms: u64,
    /// Start of the budget period it was admitted in, which it is charged to.
    pub period_start_ms: u64,
}

/// An open reservation as a store keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReservation {
    pub id: ReservationId,
    pub cost: NanoUsd,
    /// What the call may come to at most (`>= cost`). Kept in memory only: a
    /// reservation restored from disk belongs to a process that is gone, and
    /// counts at its cost.
    pub ceiling: NanoUsd,
    pub tokens: u64,
    /// Minute (since the epoch) whose window counted its tokens.
    pub minute: u64,
    pub period_start_ms: u64,
    pub expires_at_ms: u64,
}

impl From<&OpenReservation> for Reservation {
    fn from(r: &OpenReservation) -> Self {
        Reservation {
            id: r.id,
            cost: r.cost,
            tokens: r.tokens,
            expires_at_ms: r.expires_at_ms,
            period_start_ms: r.period_start_ms,
        }
    }
}

/// What a call really used, reported when it is settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Actual {
    pub cost: NanoUsd,
    /// All tokens: input, output, cache read and cache write.
    pub tokens: u64,
}

/// A settled reservation. `charged` may exceed `held`: real usage is recorded
/// truthfully even when the estimate was low.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub id: ReservationId,
    /// What was still held; 0 when the reservation had expired before the settle.
    pub held: NanoUsd,
    /// The reservation had expired: its hold was already returned, and the
    /// charge was made all the same, since the call ran.
    pub late: bool,
    pub charged: NanoUsd,
    pub period_start_ms: u64,
    /// The period's spend after this charge.
    pub period_spent: NanoUsd,
}

/// A released reservation: its hold went back to the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Released {
    pub id: ReservationId,
    pub held: NanoUsd,
}

/// Open reservations by id. Ids are issued by the store, not by callers, so a
/// cheap multiplicative hash is safe and keeps the hot path short.
pub(crate) type OpenMap = HashMap<ReservationId, OpenReservation, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing spreads sequential ids over the high and low bits.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

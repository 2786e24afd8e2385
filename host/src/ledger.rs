//! The ledger: two-phase accounting that a budget cannot be overspent through.
//!
//! Before a call, [`Ledger::reserve`] holds its worst-case cost against the
//! tenant's budget and its estimated tokens against the per-minute windows —
//! all or nothing, or an error naming the limit that would break. After the
//! call, [`Ledger::settle`] charges the real usage; on failure,
//! [`Ledger::release`] returns the hold; a reservation neither settled nor
//! released expires after [`LedgerSettings::reservation_ttl_ms`]. Invariants:
//! `spent + reserved <= limit` holds for every admission (only a settle that
//! costs more than its estimate can push `spent` past the limit), and
//! `reserved` is always the sum of the open reservations.
//!
//! ```
//! use tollgate_host::ids::TenantId;
//! use tollgate_host::ledger::{Actual, Ledger, LedgerSettings, MemoryStore, ReserveRequest, TenantLimits};
//! use tollgate_host::money::NanoUsd;
//!
//! let ledger = Ledger::new(MemoryStore::new(), LedgerSettings::default());
//! let acme = TenantId::new("acme").unwrap();
//! ledger.set_limits(&acme, TenantLimits::monthly(NanoUsd::from_usd(10)));
//! let now_ms = 1_750_000_000_000;
//! let r = ledger.reserve(&acme, ReserveRequest { cost: NanoUsd::from_cents(3), tokens: 2_000, now_ms, ceiling: None }).unwrap();
//! ledger.settle(&acme, r.id, Actual { cost: NanoUsd::from_cents(1), tokens: 700 }, now_ms + 900).unwrap();
//! assert_eq!(ledger.snapshot(&acme, now_ms + 1_000).unwrap().spent, NanoUsd::from_cents(1));
//! ```
//!
//! Modules: [`period`] (calendar periods), [`window`] (RPM/TPM minutes),
//! [`reservation`], [`limits`], [`error`], [`store`] (the trait),
//! [`book_store`] (the one store over in-memory books, with a journal),
//! [`memory`] (no journal), `durable` (a redb journal) and `redis_store`
//! (a fleet's shared ledger, one Lua script per operation).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::ids::TenantId;

mod book;
pub mod book_store;
#[cfg(feature = "durable")]
pub mod durable;
pub mod error;
#[cfg(feature = "durable")]
mod group_commit;
pub mod limits;
pub mod memory;
pub mod period;
#[cfg(feature = "redis")]
pub mod redis_store;
pub mod reservation;
pub mod store;
#[cfg(feature = "durable")]
mod wal;
pub mod window;

pub use book::Change;
pub use book_store::{BookStore, Journal, Waiter};
#[cfg(feature = "durable")]
pub use durable::{Commit, DurableStore, FSYNC_CHECKPOINT};
pub use error::{LedgerError, ReserveError, StoreError};
pub use limits::TenantLimits;
pub use memory::MemoryStore;
pub use period::{Period, PeriodBounds, PeriodTotals};
#[cfg(feature = "redis")]
pub use redis_store::{RedisMemory, RedisSettings, RedisStore, redacted};
pub use reservation::{Actual, Released, Reservation, ReservationId, ReserveRequest, Settled};
pub use store::{
    AsyncLedgerStore, Durable, LedgerStore, RestoredHold, SeriesKeep, SpendSeries, StoreFuture, TenantLedgerState,
};

/// A restored hold and its charge, queued: await the [`Durable`] before reporting it.
pub type RestoredCharge = (RestoredHold, Result<(Settled, Durable), LedgerError>);

/// How the ledger behaves, whatever its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerSettings {
    /// A reservation not settled or released within this time expires and
    /// its hold returns to the budget. Longer than the longest call.
    pub reservation_ttl_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        // Bedrock calls (streams included) finish well within 15 minutes.
        LedgerSettings {
            reservation_ttl_ms: 60 * 60 * 1000,
        }
    }
}

/// Tenants' limits in front of a store. Cheap to share between threads.
pub struct Ledger<S> {
    store: S,
    settings: LedgerSettings,
    limits: RwLock<HashMap<TenantId, TenantLimits>>,
}

impl<S: LedgerStore> Ledger<S> {
    pub fn new(store: S, settings: LedgerSettings) -> Self {
        Ledger {
            store,
            settings,
            limits: RwLock::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn settings(&self) -> LedgerSettings {
        self.settings
    }

    /// Set or replace a tenant's limits. A lower budget never cancels holds
    /// already granted; a new period kind or time zone starts a new period.
    pub fn set_limits(&self, tenant: &TenantId, limits: TenantLimits) {
        self.store.track(tenant);
        self.limits
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone(), limits);
    }

    pub fn limits(&self, tenant: &TenantId) -> Option<TenantLimits> {
        self.limits
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied()
    }

    /// Hold a call's worst case, or say which limit it would break.
    pub fn reserve(&self, tenant: &TenantId, request: ReserveRequest) -> Result<Reservation, ReserveError> {
        let limits = self
            .limits(tenant)
            .ok_or_else(|| ReserveError::UnknownTenant { tenant: tenant.clone() })?;
        self.store
            .reserve(tenant, &limits, request, self.settings.reservation_ttl_ms)
    }

    /// Charge a call's real usage in place of its hold. An id that is not
    /// open is an error, never a second charge.
    pub fn settle(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let limits = self.known(tenant)?;
        self.store.settle(tenant, &limits, id, actual, now_ms)
    }

    /// [`settle`](Self::settle) without blocking when the store
    /// [`queues_settles`](LedgerStore::queues_settles): await the returned
    /// [`Durable`] before acknowledging the charge.
    pub fn settle_queued(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<(Settled, Durable), LedgerError> {
        let limits = self.known(tenant)?;
        self.store.settle_queued(tenant, &limits, id, actual, now_ms)
    }

    /// Return a failed call's hold without charging it.
    pub fn release(&self, tenant: &TenantId, id: ReservationId, now_ms: u64) -> Result<Released, LedgerError> {
        let limits = self.known(tenant)?;
        self.store.release(tenant, &limits, id, now_ms)
    }

    /// Expire every reservation past its time; run it periodically (each
    /// tenant's own calls also expire its reservations as they go).
    pub fn expire(&self, now_ms: u64) -> Result<usize, LedgerError> {
        Ok(self.store.expire(now_ms)?)
    }

    /// The tenant's figures now, from memory.
    pub fn snapshot(&self, tenant: &TenantId, now_ms: u64) -> Result<TenantLedgerState, LedgerError> {
        let limits = self.known(tenant)?;
        Ok(self.store.load(tenant, &limits, now_ms)?)
    }

    /// Totals of the tenant's periods kept, the current one included, oldest first.
    pub fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, LedgerError> {
        Ok(self.store.history(tenant)?)
    }

    /// [`reserve`](Self::reserve) for async callers: awaits a store that
    /// crosses a network, or the write of a durable store's hold, without
    /// holding a thread. It returns once the hold is durable, so a call
    /// forwarded after it can be charged even if the process dies.
    pub async fn reserve_async(&self, tenant: &TenantId, request: ReserveRequest) -> Result<Reservation, ReserveError> {
        let limits = self
            .limits(tenant)
            .ok_or_else(|| ReserveError::UnknownTenant { tenant: tenant.clone() })?;
        let ttl_ms = self.settings.reservation_ttl_ms;
        if let Some(remote) = self.store.remote() {
            return remote.reserve(tenant, &limits, request, ttl_ms).await;
        }
        let (reservation, durable) = self.store.reserve_queued(tenant, &limits, request, ttl_ms)?;
        // On failure the store has stopped: the hold stays in memory, but no call is forwarded against it.
        durable.wait().await?;
        Ok(reservation)
    }

    /// Charges every hold the store found open at load its full amount
    /// (see [`LedgerStore::take_restored`]): the call it covered may have
    /// run, and no usage will ever come for it. Run it once at startup,
    /// once the tenants' limits are set and before calls are admitted. A
    /// hold whose tenant has no limits stays open, counted as reserved.
    /// The charges are queued together: await each [`Durable`] before
    /// reporting its charge.
    pub fn charge_restored(&self, now_ms: u64) -> Vec<RestoredCharge> {
        self.store
            .take_restored()
            .into_iter()
            .map(|hold| {
                let actual = Actual {
                    cost: hold.cost,
                    tokens: hold.tokens,
                };
                let settled = self.settle_queued(&hold.tenant, hold.id, actual, now_ms);
                (hold, settled)
            })
            .collect()
    }

    /// [`snapshot`](Self::snapshot), awaiting a store that crosses a network.
    pub async fn snapshot_async(&self, tenant: &TenantId, now_ms: u64) -> Result<TenantLedgerState, LedgerError> {
        let Some(remote) = self.store.remote() else {
            return self.snapshot(tenant, now_ms);
        };
        let limits = self.known(tenant)?;
        Ok(remote.load(tenant, &limits, now_ms).await?)
    }

    /// [`settle`](Self::settle), awaiting a store that crosses a network.
    pub async fn settle_async(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let limits = self.known(tenant)?;
        match self.store.remote() {
            Some(remote) => remote.settle(tenant, &limits, id, actual, now_ms).await,
            None => self.store.settle(tenant, &limits, id, actual, now_ms),
        }
    }

    /// [`release`](Self::release), awaiting a store that crosses a network.
    pub async fn release_async(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        let limits = self.known(tenant)?;
        match self.store.remote() {
            Some(remote) => remote.release(tenant, &limits, id, now_ms).await,
            None => self.store.release(tenant, &limits, id, now_ms),
        }
    }

    /// The store's async form; `None` for a local store.
    pub fn remote(&self) -> Option<&dyn AsyncLedgerStore> {
        self.store.remote()
    }

    pub(crate) fn known(&self, tenant: &TenantId) -> Result<TenantLimits, LedgerError> {
        self.limits(tenant)
            .ok_or_else(|| LedgerError::UnknownTenant { tenant: tenant.clone() })
    }
}

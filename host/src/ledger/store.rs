//! The store trait. Its operations are whole ledger operations carrying the
//! tenant's limits — not gets and puts — so each can run atomically where the
//! data lives: under a per-tenant lock in memory, or as one server-side script
//! in Redis.

use std::future::Future;
use std::pin::Pin;

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::error::{LedgerError, ReserveError, StoreError};
use super::limits::TenantLimits;
use super::period::{Period, PeriodTotals};
use super::reservation::{Actual, Released, Reservation, ReservationId, ReserveRequest, Settled};

/// A ledger's storage. Every operation brings the tenant's period, expiries
/// and minute window up to `now_ms` first.
pub trait LedgerStore: Send + Sync {
    /// Hold `request.cost` against the budget and `request.tokens` against
    /// TPM (and one request against RPM), all or nothing. Returns once the
    /// hold is as durable as the store makes anything.
    fn reserve(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<Reservation, ReserveError>;

    /// Replace the hold by the real charge. Returns once the charge is as
    /// durable as the store makes anything.
    fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError>;

    /// [`settle`](Self::settle) without blocking: the charge is applied at
    /// once, and the returned [`Durable`] resolves when it is as durable as
    /// the store makes anything. Only stores that say
    /// [`queues_settles`](Self::queues_settles) implement it without
    /// blocking; the default settles and waits in place.
    fn settle_queued(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<(Settled, Durable), LedgerError> {
        self.settle(tenant, limits, id, actual, now_ms)
            .map(|settled| (settled, Durable::ready()))
    }

    /// Whether [`settle_queued`](Self::settle_queued) never blocks, so an
    /// async caller can call it in place and await its [`Durable`].
    fn queues_settles(&self) -> bool {
        false
    }

    /// [`reserve`](Self::reserve) for a call about to be forwarded: the hold
    /// is applied at once, and the returned [`Durable`] resolves once its
    /// write is as durable as the store makes anything. Forward only then: a
    /// hold that never reached the disk cannot be charged after a crash.
    fn reserve_queued(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<(Reservation, Durable), ReserveError> {
        self.reserve(tenant, limits, request, ttl_ms)
            .map(|reservation| (reservation, Durable::ready()))
    }

    /// Holds of calls that were in flight when the process that took them
    /// stopped: found open when the store was loaded, or adopted from a
    /// replica that died. Each is handed out once. Bedrock may have run
    /// those calls, so each must be charged its hold (a settle under its
    /// id, as [`Ledger::charge_restored`](super::Ledger::charge_restored)
    /// does); a local store keeps them open until then, never expiring.
    fn take_restored(&self) -> Vec<RestoredHold> {
        Vec::new()
    }

    /// Woken when [`take_restored`](Self::take_restored) may have more to
    /// hand out while the process runs (holds adopted from a replica that
    /// died); `None` for a store that finds them only when it opens.
    fn restored_signal(&self) -> Option<&tokio::sync::Notify> {
        None
    }

    /// The tenant is configured: a store that sweeps only the tenants it
    /// has seen sweeps this one too.
    fn track(&self, tenant: &TenantId) {
        let _ = tenant;
    }

    /// Return the hold without charging.
    fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError>;

    /// Return the holds of every tenant's reservations that expired by
    /// `now_ms`; the number expired.
    fn expire(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// The tenant's current figures.
    fn load(&self, tenant: &TenantId, limits: &TenantLimits, now_ms: u64) -> Result<TenantLedgerState, StoreError>;

    /// Totals of the tenant's periods kept, the current one included, oldest first.
    fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, StoreError>;

    /// Whether a settle or release may block on I/O (a disk or a network), so
    /// an async caller must run it off its workers. A store that answers from
    /// memory in nanoseconds says `false` and is called in place.
    fn may_block(&self) -> bool {
        true
    }

    /// `Err` once the store can no longer accept writes (a durable store
    /// whose commit failed, a network store that is unreachable), for
    /// readiness probes. Cheap: no I/O.
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Woken whenever [`health`](Self::health) may have changed, for
    /// callers that wait for readiness; `None` for a store whose health
    /// only changes by itself failing.
    fn health_signal(&self) -> Option<&tokio::sync::Notify> {
        None
    }

    /// Whether calls go on (on a bounded local allowance) while the store
    /// is unhealthy, so readiness reports it without taking the replica out.
    fn fails_open(&self) -> bool {
        false
    }

    /// The async form of a store whose operations cross a network, which an
    /// async caller must use so a round-trip never blocks a runtime worker.
    /// Local stores answer from memory and have none.
    fn remote(&self) -> Option<&dyn AsyncLedgerStore> {
        None
    }
}

/// A hold whose call's process stopped before the call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredHold {
    pub tenant: TenantId,
    pub id: ReservationId,
    pub cost: NanoUsd,
    pub tokens: u64,
}

/// A boxed future of a store operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The operations on the request path, awaited rather than blocked on. Same
/// meaning as the [`LedgerStore`] methods of the same names.
pub trait AsyncLedgerStore: Send + Sync {
    fn reserve<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> StoreFuture<'a, Result<Reservation, ReserveError>>;

    fn settle<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<Settled, LedgerError>>;

    fn release<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<Released, LedgerError>>;

    fn load<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<TenantLedgerState, StoreError>>;

    /// The tenant's settled spend by minute and by hour, as every replica
    /// recorded it, for burn rates and forecasts that are the fleet's;
    /// `None` from a store that does not keep it.
    fn spend_series<'a>(
        &'a self,
        tenant: &'a TenantId,
        now_ms: u64,
        keep: SeriesKeep,
    ) -> StoreFuture<'a, Result<Option<SpendSeries>, StoreError>> {
        let _ = (tenant, now_ms, keep);
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// How far back a [`SpendSeries`] reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesKeep {
    pub minutes: u64,
    pub hours: u64,
}

/// Settled spend in nano-dollars by minute and by hour since the epoch,
/// oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpendSeries {
    pub minutes: Vec<(u64, u64)>,
    pub hours: Vec<(u64, u64)>,
}

/// Resolves once a queued settle is durable, or with the error that stopped
/// the store from making it so.
pub struct Durable(Option<CommitWait>);

type CommitWait = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

impl Durable {
    /// Already durable (or nothing to wait for).
    pub fn ready() -> Durable {
        Durable(None)
    }

    /// Used by the durable store's group commit only.
    #[cfg_attr(not(feature = "durable"), allow(dead_code))]
    pub(crate) fn pending(wait: impl Future<Output = Result<(), StoreError>> + Send + 'static) -> Durable {
        Durable(Some(Box::pin(wait)))
    }

    /// Waits for it.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(wait) => wait.await,
        }
    }
}

/// A tenant's ledger figures at one instant: what a policy is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantLedgerState {
    pub limit: NanoUsd,
    /// Charged by settled calls in the current period.
    pub spent: NanoUsd,
    /// Held for calls in flight: the sum of the open reservations.
    pub reserved: NanoUsd,
    pub open_reservations: usize,
    pub period: Period,
    pub period_start_ms: u64,
    pub period_end_ms: u64,
    /// Requests admitted in the current minute.
    pub window_requests: u32,
    /// Tokens in the current minute: estimates of open calls, real counts of settled ones.
    pub window_tokens: u64,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub included_tokens: u64,
    /// Tokens of calls settled in the current period.
    pub used_tokens: u64,
}

impl<S: LedgerStore + ?Sized> LedgerStore for Box<S> {
    fn reserve(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<Reservation, ReserveError> {
        (**self).reserve(tenant, limits, request, ttl_ms)
    }

    fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        (**self).settle(tenant, limits, id, actual, now_ms)
    }

    fn settle_queued(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<(Settled, Durable), LedgerError> {
        (**self).settle_queued(tenant, limits, id, actual, now_ms)
    }

    fn queues_settles(&self) -> bool {
        (**self).queues_settles()
    }

    fn reserve_queued(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<(Reservation, Durable), ReserveError> {
        (**self).reserve_queued(tenant, limits, request, ttl_ms)
    }

    fn take_restored(&self) -> Vec<RestoredHold> {
        (**self).take_restored()
    }

    fn restored_signal(&self) -> Option<&tokio::sync::Notify> {
        (**self).restored_signal()
    }

    fn track(&self, tenant: &TenantId) {
        (**self).track(tenant)
    }

    fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        (**self).release(tenant, limits, id, now_ms)
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        (**self).expire(now_ms)
    }

    fn load(&self, tenant: &TenantId, limits: &TenantLimits, now_ms: u64) -> Result<TenantLedgerState, StoreError> {
        (**self).load(tenant, limits, now_ms)
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, StoreError> {
        (**self).history(tenant)
    }

    fn may_block(&self) -> bool {
        (**self).may_block()
    }

    fn health(&self) -> Result<(), StoreError> {
        (**self).health()
    }

    fn remote(&self) -> Option<&dyn AsyncLedgerStore> {
        (**self).remote()
    }

    fn fails_open(&self) -> bool {
        (**self).fails_open()
    }

    fn health_signal(&self) -> Option<&tokio::sync::Notify> {
        (**self).health_signal()
    }
}

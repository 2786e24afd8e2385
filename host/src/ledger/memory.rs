//! The in-memory store: fast, and forgets everything when the process ends.
//! For tests, demos and gateways whose budgets are enforced elsewhere too.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::TenantId;

use super::book::{Books, lock};
use super::error::{LedgerError, ReserveError, StoreError};
use super::limits::TenantLimits;
use super::period::PeriodTotals;
use super::reservation::{Actual, Released, Reservation, ReservationId, ReserveRequest, Settled};
use super::store::{LedgerStore, TenantLedgerState};

pub struct MemoryStore {
    books: Books,
    next_id: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            books: Books::default(),
            next_id: AtomicU64::new(1),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Nothing to write through.
fn forget(_: super::book::Change<'_>) {}

impl LedgerStore for MemoryStore {
    fn reserve(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<Reservation, ReserveError> {
        let id = ReservationId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let book = self.books.get(tenant);
        let open = lock(&book).reserve(limits, request, id, ttl_ms, &mut forget)?;
        Ok(Reservation::from(&open))
    }

    fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let book = self.books.get(tenant);
        lock(&book).settle(limits, id, actual, now_ms, &mut forget)
    }

    fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        let book = self.books.get(tenant);
        lock(&book).release(limits, id, now_ms, &mut forget)
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        Ok(self
            .books
            .all()
            .iter()
            .map(|book| lock(book).expire(now_ms, &mut forget))
            .sum())
    }

    fn load(&self, tenant: &TenantId, limits: &TenantLimits, now_ms: u64) -> Result<TenantLedgerState, StoreError> {
        let book = self.books.get(tenant);
        Ok(lock(&book).state(limits, now_ms, &mut forget))
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, StoreError> {
        let book = self.books.get(tenant);
        Ok(lock(&book).history())
    }
}

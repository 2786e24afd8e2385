//! The one [`LedgerStore`] over in-memory books. Every operation runs under
//! its tenant's book lock, against the in-memory image (no I/O on the
//! request path), and hands the changes it made, in order, to the store's
//! [`Journal`]: none for [`MemoryStore`](super::MemoryStore), redb for the
//! durable store. A settle returns once its journal says the charge is as
//! durable as it makes anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::ids::TenantId;

use super::book::{Books, Change, TenantBook, lock};
use super::error::{LedgerError, ReserveError, StoreError};
use super::limits::TenantLimits;
use super::period::PeriodTotals;
use super::reservation::{Actual, Released, Reservation, ReservationId, ReserveRequest, Settled};
use super::store::{Durable, LedgerStore, RestoredHold, TenantLedgerState};

/// Where a [`BookStore`]'s changes go.
pub trait Journal: Send + Sync {
    /// One change as the journal keeps it.
    type Entry: Send;
    /// A handle to wait on until queued entries are durable.
    type Ticket;

    /// The entry for a change, or `None` when the journal keeps nothing.
    fn entry(tenant: &TenantId, change: Change<'_>) -> Option<Self::Entry>;

    /// Refuses new work once the journal can no longer write.
    fn check(&self) -> Result<(), StoreError>;

    /// Queues one operation's entries, in order; called under the book's
    /// lock so a tenant's entries never reorder.
    fn enqueue(&self, entries: Vec<Self::Entry>, waiter: Waiter) -> Result<Self::Ticket, StoreError>;

    /// Waits until the entries of `ticket` are durable.
    fn wait(&self, ticket: Self::Ticket) -> Result<(), StoreError>;

    /// Resolves when the entries of `ticket` are durable, without blocking.
    fn durable(&self, ticket: Self::Ticket) -> Durable;

    /// Whether [`Journal::wait`] can block on I/O (a journal that keeps
    /// nothing returns at once).
    const WAITS: bool = true;
}

/// Who waits for queued entries to be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiter {
    /// Nobody: they are written with the next batch.
    Nobody,
    /// The calling thread, in [`Journal::wait`] next.
    Thread,
    /// A task, awaiting [`Journal::durable`] next.
    Task,
}

/// Tenants' books in memory, written through to a [`Journal`].
pub struct BookStore<J> {
    books: Books,
    next_id: AtomicU64,
    journal: J,
    /// Holds found open at load, not yet handed out to be charged.
    restored: Mutex<Vec<RestoredHold>>,
}

impl<J> BookStore<J> {
    pub(crate) fn from_parts(books: Books, next_id: u64, journal: J) -> Self {
        BookStore {
            books,
            next_id: AtomicU64::new(next_id),
            journal,
            restored: Mutex::default(),
        }
    }

    /// Holds restored open at load, to hand out by [`LedgerStore::take_restored`].
    #[cfg(feature = "durable")]
    pub(crate) fn with_restored(mut self, restored: Vec<RestoredHold>) -> Self {
        self.restored = Mutex::new(restored);
        self
    }

    #[cfg(feature = "durable")]
    pub(crate) fn journal(&self) -> &J {
        &self.journal
    }
}

impl<J: Journal> BookStore<J> {
    /// Runs `op` on the tenant's book and journals its changes. A ticket
    /// comes back when `durable(&result)`: the caller must wait for it, and
    /// does so outside the book's lock, so the tenant's other calls go on.
    /// `waiter` is who waits then.
    fn with_book<R>(
        &self,
        tenant: &TenantId,
        durable: fn(&R) -> bool,
        waiter: Waiter,
        op: impl FnOnce(&mut TenantBook, &mut dyn FnMut(Change<'_>)) -> R,
    ) -> Result<(R, Option<J::Ticket>), StoreError> {
        self.journal.check()?;
        let book = self.books.get(tenant);
        let mut book = lock(&book);
        let mut entries = Vec::new();
        let result = op(&mut book, &mut |change| entries.extend(J::entry(tenant, change)));
        if entries.is_empty() {
            return Ok((result, None));
        }
        let wait = durable(&result);
        let ticket = self
            .journal
            .enqueue(entries, if wait { waiter } else { Waiter::Nobody })?;
        Ok((result, wait.then_some(ticket)))
    }
}

impl<J: Journal> BookStore<J> {
    /// Takes a hold in memory and queues its write; the ticket to wait on
    /// before the call may be forwarded.
    fn hold(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
        waiter: Waiter,
    ) -> Result<(Reservation, Option<J::Ticket>), ReserveError> {
        let id = ReservationId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (open, ticket) = self.with_book(tenant, Result::is_ok, waiter, |book, sink| {
            book.reserve(limits, request, id, ttl_ms, sink)
        })?;
        Ok((Reservation::from(&open?), ticket))
    }
}

impl<J: Journal> LedgerStore for BookStore<J> {
    fn reserve(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<Reservation, ReserveError> {
        let (reservation, ticket) = self.hold(tenant, limits, request, ttl_ms, Waiter::Thread)?;
        if let Some(ticket) = ticket {
            self.journal.wait(ticket)?;
        }
        Ok(reservation)
    }

    fn reserve_queued(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<(Reservation, Durable), ReserveError> {
        let (reservation, ticket) = self.hold(tenant, limits, request, ttl_ms, Waiter::Task)?;
        Ok((
            reservation,
            ticket.map_or_else(Durable::ready, |t| self.journal.durable(t)),
        ))
    }

    fn take_restored(&self) -> Vec<RestoredHold> {
        std::mem::take(&mut *self.restored.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let (settled, ticket) = self.with_book(tenant, Result::is_ok, Waiter::Thread, |book, sink| {
            book.settle(limits, id, actual, now_ms, sink)
        })?;
        let settled = settled?;
        if let Some(ticket) = ticket {
            self.journal.wait(ticket)?;
        }
        Ok(settled)
    }

    fn settle_queued(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<(Settled, Durable), LedgerError> {
        let (settled, ticket) = self.with_book(tenant, Result::is_ok, Waiter::Task, |book, sink| {
            book.settle(limits, id, actual, now_ms, sink)
        })?;
        let settled = settled?;
        Ok((settled, ticket.map_or_else(Durable::ready, |t| self.journal.durable(t))))
    }

    /// Applying a settle takes the book's lock and queues its entries: no I/O.
    fn queues_settles(&self) -> bool {
        true
    }

    fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        let (released, _) = self.with_book(
            tenant,
            |_| false,
            Waiter::Nobody,
            |book, sink| book.release(limits, id, now_ms, sink),
        )?;
        released
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.journal.check()?;
        let mut expired = 0;
        for book in self.books.all() {
            let mut book = lock(&book);
            let tenant = book.tenant().clone();
            let mut entries = Vec::new();
            // Only the closed holds are journalled; the totals follow with the next charge.
            expired += book.expire(now_ms, &mut |change| {
                if let Change::Closed(_) = change {
                    entries.extend(J::entry(&tenant, change));
                }
            });
            if !entries.is_empty() {
                self.journal.enqueue(entries, Waiter::Nobody)?;
            }
        }
        Ok(expired)
    }

    fn load(&self, tenant: &TenantId, limits: &TenantLimits, now_ms: u64) -> Result<TenantLedgerState, StoreError> {
        let (state, _) = self.with_book(
            tenant,
            |_| false,
            Waiter::Nobody,
            |book, sink| book.state(limits, now_ms, sink),
        )?;
        Ok(state)
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, StoreError> {
        Ok(lock(&self.books.get(tenant)).history())
    }

    fn may_block(&self) -> bool {
        J::WAITS
    }

    fn health(&self) -> Result<(), StoreError> {
        self.journal.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::memory::Forget;

    /// A journal whose disk has failed: it refuses every write.
    struct Failed;

    impl Journal for Failed {
        type Entry = ();
        type Ticket = ();

        fn entry(_: &TenantId, _: Change<'_>) -> Option<()> {
            Some(())
        }

        fn check(&self) -> Result<(), StoreError> {
            Err(StoreError::Stopped("disk full".into()))
        }

        fn enqueue(&self, _: Vec<()>, _: Waiter) -> Result<(), StoreError> {
            self.check()
        }

        fn wait(&self, _: ()) -> Result<(), StoreError> {
            self.check()
        }

        fn durable(&self, _: ()) -> Durable {
            Durable::ready()
        }
    }

    #[test]
    fn a_store_whose_journal_stopped_reports_it_as_unhealthy() {
        assert!(BookStore::from_parts(Books::default(), 1, Forget).health().is_ok());
        let err = BookStore::from_parts(Books::default(), 1, Failed)
            .health()
            .expect_err("unhealthy");
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}

//! Changes that could not reach Redis, kept in this process and written, in
//! order, when Redis answers again. Only the outcome of a call that already
//! ran is kept: its charge must land exactly once, however late.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::ids::TenantId;
use crate::ledger::limits::TenantLimits;
use crate::ledger::reservation::{Actual, ReservationId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pending {
    Settle {
        tenant: TenantId,
        limits: TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    },
    Release {
        tenant: TenantId,
        limits: TenantLimits,
        id: ReservationId,
        now_ms: u64,
    },
    /// A call admitted on the local allowance: charged under its own id.
    Charge {
        tenant: TenantId,
        limits: TenantLimits,
        charge_id: String,
        actual: Actual,
        now_ms: u64,
    },
}

#[derive(Default)]
pub(super) struct Outbox {
    queue: Mutex<VecDeque<Pending>>,
    /// Woken whenever the queue becomes empty.
    empty: Notify,
}

impl Outbox {
    pub(super) fn keep(&self, pending: Pending) {
        self.lock().push_back(pending);
    }

    pub(super) fn front(&self) -> Option<Pending> {
        self.lock().front().cloned()
    }

    /// Drops `written` if it is still first (only the probe pops).
    pub(super) fn pop(&self, written: &Pending) {
        let mut queue = self.lock();
        if queue.front() == Some(written) {
            queue.pop_front();
        }
        if queue.is_empty() {
            self.empty.notify_waiters();
        }
    }

    /// Resolves once nothing is kept.
    pub(super) async fn drained(&self) {
        loop {
            let notified = self.empty.notified();
            tokio::pin!(notified);
            // Registered before the check, so an emptying in between is not missed.
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

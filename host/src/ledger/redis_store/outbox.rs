//! Changes that could not reach Redis, kept in this process and written, in
//! order, when Redis answers again. Only the outcome of a call that already
//! ran is kept: its charge must land exactly once, however late.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::ids::TenantId;
use crate::ledger::error::StoreError;
use crate::ledger::limits::TenantLimits;
use crate::ledger::reservation::{Actual, ReservationId};

use super::{Inner, journal, reply};

/// `owner` on a settle or release: the owner id of the process that kept it,
/// when an earlier process of this replica did (read from its journal);
/// `None` for this process. Written under that id, so Redis tells the
/// call's own outcome, which amends an adopter's charge of its hold, from an
/// adopter's retry of that charge (see `ledger.lua`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pending {
    Settle {
        tenant: TenantId,
        limits: TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
        owner: Option<String>,
    },
    Release {
        tenant: TenantId,
        limits: TenantLimits,
        id: ReservationId,
        now_ms: u64,
        owner: Option<String>,
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

impl Pending {
    /// The owner id of the earlier process that kept a settle or release;
    /// `None` when this process did (or for an allowance charge).
    fn kept_by(&self) -> Option<&str> {
        match self {
            Pending::Settle { owner, .. } | Pending::Release { owner, .. } => owner.as_deref(),
            Pending::Charge { .. } => None,
        }
    }

    /// The journal's entry for a kept settle or release of a hold Redis
    /// took; an allowance charge is journalled by the allowance.
    fn journal_entry(&self, this_owner: &str) -> Option<journal::Entry> {
        let owner = self.kept_by().unwrap_or(this_owner).to_owned();
        match self {
            Pending::Settle {
                tenant,
                limits,
                id,
                actual,
                now_ms,
                ..
            } => Some(journal::Entry::HoldSettled {
                id: id.0,
                tenant: tenant.as_str().to_owned(),
                limits: *limits,
                cost: actual.cost.get(),
                tokens: actual.tokens,
                at_ms: *now_ms,
                owner,
            }),
            Pending::Release {
                tenant,
                limits,
                id,
                now_ms,
                ..
            } => Some(journal::Entry::HoldReleased {
                id: id.0,
                tenant: tenant.as_str().to_owned(),
                limits: *limits,
                at_ms: *now_ms,
                owner,
            }),
            Pending::Charge { .. } => None,
        }
    }
}

impl Outbox {
    pub(super) fn keep(&self, pending: Pending) {
        self.lock().push_back(pending);
    }

    pub(super) fn front(&self) -> Option<Pending> {
        self.lock().front().cloned()
    }

    /// Drops `written` if it is still first: two flushes may write the same
    /// change, which Redis answers "again" to, and only one pops it.
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

impl Inner {
    /// Keeps a change for Redis, and past this process when a journal is
    /// kept: lost, its hold would be adopted and charged in full, a call
    /// that never ran included. Kept before it is journalled, so emptying
    /// the journal never drops its entry (see `Journal::clear_unless`).
    pub(super) async fn keep_journalled(&self, pending: Pending) {
        let entry = pending.journal_entry(&self.lease.owner);
        self.outbox.keep(pending);
        self.journal(entry).await;
    }

    /// Writes what was kept, oldest first; stops at the first that cannot be.
    pub(super) async fn flush(&self) {
        while let Some(pending) = self.outbox.front() {
            let (tenant, limits, op, key, now_ms, extra) = match &pending {
                Pending::Settle {
                    tenant,
                    limits,
                    id,
                    actual,
                    now_ms,
                    ..
                } => (tenant, limits, "settle", id.0.to_string(), *now_ms, Some(*actual)),
                Pending::Release {
                    tenant,
                    limits,
                    id,
                    now_ms,
                    ..
                } => (tenant, limits, "release", id.0.to_string(), *now_ms, None),
                Pending::Charge {
                    tenant,
                    limits,
                    charge_id,
                    actual,
                    now_ms,
                } => (tenant, limits, "charge", charge_id.clone(), *now_ms, Some(*actual)),
            };
            let mut invocation = self.invocation(tenant, op, Some(limits), now_ms);
            invocation.arg(&key);
            if let Some(actual) = extra {
                invocation.arg(actual.cost.get()).arg(actual.tokens);
            }
            // Always a retry: the first attempt's answer was lost, not necessarily its effect.
            invocation.arg("1").arg(pending.kept_by().unwrap_or(&self.lease.owner));
            let id = ReservationId(key.parse().unwrap_or(0));
            let id = &id;
            match self.run_async::<Vec<String>>(invocation).await {
                Ok(answer) => {
                    let written = match extra {
                        Some(_) => reply::settled(&self.name, tenant, *id, &answer).map(drop),
                        None => reply::released(&self.name, tenant, *id, &answer).map(drop),
                    };
                    match written {
                        Ok(()) => tracing::info!(tenant = %tenant, id = %id, op, "wrote a kept ledger change"),
                        Err(e) => {
                            tracing::error!(tenant = %tenant, id = %id, op, error = %e, "a kept ledger change was refused")
                        }
                    }
                    self.outbox.pop(&pending);
                    self.note_written(&pending);
                    if self.outbox.len() == 0 {
                        self.forget_journal_failure();
                        let kept = || self.outbox.len() > 0;
                        match (&self.allowance, &self.journal) {
                            (Some(allowance), _) => allowance.renew(kept),
                            (None, Some(journal)) => journal.clear_unless(kept),
                            (None, None) => {}
                        }
                    }
                }
                Err(StoreError::Unavailable { .. }) => return,
                Err(e) => {
                    tracing::error!(tenant = %tenant, id = %id, op, error = %e, "a kept ledger change was refused");
                    self.outbox.pop(&pending);
                    if self.outbox.len() == 0 {
                        self.forget_journal_failure();
                    }
                }
            }
        }
    }

    /// Nothing is kept any more: a journal failure no longer puts anything at risk.
    fn forget_journal_failure(&self) {
        *self.journal_failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Notes in the journal, if one is kept, that Redis has answered
    /// `pending`. Unsynced: if the note is lost, the change is written
    /// again at the next start, and Redis, which remembers it, says "again".
    fn note_written(&self, pending: &Pending) {
        let Some(journal) = &self.journal else {
            return;
        };
        let charge = match pending {
            Pending::Charge { charge_id, .. } => charge_id.clone(),
            Pending::Settle { id, .. } | Pending::Release { id, .. } => journal::hold_key(*id),
        };
        if let Err(why) = journal.append(&journal::Entry::Written { charge }, false) {
            tracing::warn!(error = %why, "could not note a written change in the ledger journal");
        }
    }
}

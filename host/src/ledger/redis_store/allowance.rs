//! `fail-open-with-allowance`: while Redis does not answer, a replica admits
//! each tenant's calls against a small local allowance instead of refusing
//! them. Their charges are kept in the outbox and written to Redis when it
//! answers again, exactly once (each carries an id of its own); the
//! allowance renews once everything kept is written.
//!
//! The trade is stated plainly: during an outage a tenant may pass its
//! budget by up to the allowance on each replica. Every charge is still
//! recorded once, a killed replica's too: see `journal`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::ids::TenantId;
use crate::ledger::error::{LedgerError, ReserveError, StoreError};
use crate::ledger::limits::TenantLimits;
use crate::ledger::reservation::{Actual, Released, Reservation, ReservationId, ReserveRequest};
use crate::ledger::store::{RestoredHold, TenantLedgerState};
use crate::money::NanoUsd;

use super::Inner;
use super::journal::{self, Entry, Journal};
use super::outbox::Pending;

/// Ids of local holds have this bit set; Redis' own ids never reach it.
const LOCAL: u64 = crate::ledger::reservation::LOCAL_BIT;

#[derive(Default)]
struct Local {
    /// Settled on the allowance during this outage.
    used: NanoUsd,
    /// Open local holds by id.
    open: HashMap<u64, OpenHold>,
}

struct OpenHold {
    /// Its cost at its ceiling.
    ceiling: NanoUsd,
    /// The id its charge is written to Redis under, fixed when it opens.
    charge: String,
}

impl Local {
    fn held(&self) -> NanoUsd {
        self.open
            .values()
            .fold(NanoUsd::ZERO, |sum, hold| sum.saturating_add(hold.ceiling))
    }
}

pub(super) struct Allowance {
    limit: NanoUsd,
    /// Unique among replicas: charge ids are `<nonce>-<n>`.
    nonce: String,
    next: AtomicU64,
    tenants: Mutex<HashMap<TenantId, Local>>,
    /// Each tenant's last figures from Redis, which policies see meanwhile.
    last: Mutex<HashMap<TenantId, TenantLedgerState>>,
    journal: Option<Arc<Journal>>,
}

impl Allowance {
    pub(super) fn new(limit: NanoUsd, journal: Option<Arc<Journal>>) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Allowance {
            limit,
            nonce: format!("{:x}{:x}", std::process::id(), started),
            next: AtomicU64::new(1),
            tenants: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            journal,
        }
    }

    pub(super) fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// Keeps the figures Redis last gave.
    pub(super) fn remember(&self, tenant: &TenantId, state: &TenantLedgerState) {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.clone(), *state);
    }

    /// The last figures from Redis with this replica's local spend and holds on top.
    pub(super) fn state(&self, tenant: &TenantId) -> Option<TenantLedgerState> {
        let mut state = *self.last.lock().unwrap_or_else(PoisonError::into_inner).get(tenant)?;
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(local) = tenants.get(tenant) {
            state.spent = state.spent.saturating_add(local.used);
            state.reserved = state.reserved.saturating_add(local.held());
            state.open_reservations += local.open.len();
        }
        Some(state)
    }

    /// A hold on the allowance, or the refusal that says it is spent; with
    /// the journal entry to sync before the call is sent.
    pub(super) fn reserve(
        &self,
        tenant: &TenantId,
        request: &ReserveRequest,
        ttl_ms: u64,
        cause: StoreError,
    ) -> Result<(Reservation, Entry), ReserveError> {
        let ceiling = request.ceiling.unwrap_or(request.cost).max(request.cost);
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let local = tenants.entry(tenant.clone()).or_default();
        let committed = local.used.saturating_add(local.held()).saturating_add(ceiling);
        if committed > self.limit {
            return Err(ReserveError::Store(StoreError::Unavailable {
                store: store_name(&cause),
                detail: format!(
                    "{}; and tenant {tenant}'s local allowance of {} for the outage is spent",
                    detail(&cause),
                    self.limit
                ),
            }));
        }
        let id = LOCAL | self.next.fetch_add(1, Ordering::Relaxed);
        let charge = format!("c{}-{}", self.nonce, id & !LOCAL);
        local.open.insert(
            id,
            OpenHold {
                ceiling,
                charge: charge.clone(),
            },
        );
        drop(tenants);
        let opened = Entry::Open {
            charge,
            tenant: tenant.as_str().to_owned(),
            cost: request.cost.get(),
            tokens: request.tokens,
        };
        let period_start_ms = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .map_or(0, |s| s.period_start_ms);
        tracing::warn!(tenant = %tenant, "the ledger store does not answer; admitted on the local allowance");
        let reservation = Reservation {
            id: ReservationId(id),
            cost: request.cost,
            tokens: request.tokens,
            expires_at_ms: request.now_ms.saturating_add(ttl_ms),
            period_start_ms,
        };
        Ok((reservation, opened))
    }

    /// A call a killed process let through on its allowance and never
    /// finished, open again here under a new id and its old charge id, so
    /// that it is charged its hold once.
    pub(super) fn recover(&self, tenant: &TenantId, hold: NanoUsd, charge: String) -> ReservationId {
        let id = LOCAL | self.next.fetch_add(1, Ordering::Relaxed);
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let local = tenants.entry(tenant.clone()).or_default();
        local.open.insert(id, OpenHold { ceiling: hold, charge });
        ReservationId(id)
    }

    /// Closes a local hold with its charge; the id to write the charge under.
    pub(super) fn settle(&self, tenant: &TenantId, id: ReservationId, actual: Actual) -> Option<String> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let local = tenants.get_mut(tenant)?;
        let hold = local.open.remove(&id.0)?;
        local.used = local.used.saturating_add(actual.cost);
        Some(hold.charge)
    }

    /// Closes a local hold whose call never ran; with its charge id.
    pub(super) fn release(&self, tenant: &TenantId, id: ReservationId) -> Option<(Released, String)> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let hold = tenants.get_mut(tenant)?.open.remove(&id.0)?;
        Some((Released { id, held: hold.ceiling }, hold.charge))
    }

    /// Everything kept is written: a new outage starts with a whole
    /// allowance, and with no hold open the journal owes nothing, unless
    /// `kept` says a change was kept meanwhile.
    pub(super) fn renew(&self, kept: impl Fn() -> bool) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.retain(|_, local| !local.open.is_empty());
        for local in tenants.values_mut() {
            local.used = NanoUsd::ZERO;
        }
        // Under the lock, so no hold opens in between.
        if tenants.is_empty()
            && let Some(journal) = &self.journal
        {
            journal.clear_unless(kept);
        }
    }
}

/// The store's side of the allowance: its holds' outcomes, kept and journalled.
impl Inner {
    /// A call admitted on the allowance: its charge is kept for Redis, and
    /// the journal entry that keeps it past this process.
    pub(super) fn settle_local(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> (LedgerError, Option<Entry>) {
        let Some(charge_id) = self.allowance.as_ref().and_then(|a| a.settle(tenant, id, actual)) else {
            let unknown = LedgerError::UnknownReservation {
                tenant: tenant.clone(),
                id,
            };
            return (unknown, None);
        };
        let settled = Entry::Settled {
            charge: charge_id.clone(),
            tenant: tenant.as_str().to_owned(),
            limits: *limits,
            cost: actual.cost.get(),
            tokens: actual.tokens,
            at_ms: now_ms,
        };
        // Kept before it is journalled: the journal is emptied only once
        // nothing is kept or open, so this entry is never emptied away
        // before Redis has the charge. If it lands after (written and
        // emptied in between), the next start sends the charge again and
        // Redis, which remembers the id, counts it once.
        self.outbox.keep(Pending::Charge {
            tenant: tenant.clone(),
            limits: *limits,
            charge_id,
            actual,
            now_ms,
        });
        let deferred = LedgerError::Deferred {
            tenant: tenant.clone(),
            id,
            charge: actual.cost,
            detail: "admitted on the local allowance while the store did not answer".into(),
        };
        (deferred, Some(settled))
    }

    pub(super) fn release_local(&self, tenant: &TenantId, id: ReservationId) -> Result<(Released, Entry), LedgerError> {
        self.allowance
            .as_ref()
            .and_then(|a| a.release(tenant, id))
            .map(|(released, charge)| (released, Entry::Released { charge }))
            .ok_or_else(|| LedgerError::UnknownReservation {
                tenant: tenant.clone(),
                id,
            })
    }

    /// Journals a local hold's outcome: synced, since a lost `settled`
    /// would charge the hold and a lost `released` a call that never ran.
    pub(super) fn journal_blocking(&self, entry: Option<Entry>) {
        if let Some((journal, entry)) = self.journal_with(entry) {
            self.journal_failed(journal.append(&entry, true));
        }
    }

    pub(super) async fn journal(&self, entry: Option<Entry>) {
        if let Some((journal, entry)) = self.journal_with(entry) {
            self.journal_failed(journal.append_synced(entry).await);
        }
    }

    fn journal_with(&self, entry: Option<Entry>) -> Option<(&Arc<Journal>, Entry)> {
        Some((self.journal.as_ref()?, entry?))
    }

    /// A change the journal could not take is kept in memory only: said
    /// in the log, and in the store's health until what is kept is written.
    fn journal_failed(&self, written: Result<(), String>) {
        if let Err(why) = written {
            tracing::error!(error = %why, "a charge or release is kept in memory only; lost with this process, its hold is charged in full");
            *self.journal_failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
        }
    }

    /// What a killed process's journal still owes: its kept charges go to
    /// the outbox, its unfinished calls are handed out to be charged their holds.
    pub(super) fn owed(&self, owed: journal::Owed) {
        for pending in owed.kept {
            // Written at the first flush, before any adoption; under the earlier
            // process's owner id, so it amends a charge this one made of its hold.
            tracing::warn!(?pending, "an outcome an earlier process kept for Redis is written now");
            self.outbox.keep(pending);
        }
        for (charge_id, tenant, limits, actual, now_ms) in owed.charges {
            tracing::warn!(tenant = %tenant, charge = %charge_id, "a charge admitted on the allowance by an earlier process is written now");
            self.outbox.keep(Pending::Charge {
                tenant,
                limits,
                charge_id,
                actual,
                now_ms,
            });
        }
        let Some(allowance) = &self.allowance else { return };
        let mut recovered = self.recovered.lock().unwrap_or_else(PoisonError::into_inner);
        for (charge, tenant, hold) in owed.open {
            let id = allowance.recover(&tenant, hold.cost, charge);
            recovered.push(RestoredHold {
                tenant,
                id,
                cost: hold.cost,
                tokens: hold.tokens,
            });
        }
    }
}

fn store_name(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { store, .. } | StoreError::Remote { store, .. } => store.clone(),
        other => other.to_string(),
    }
}

fn detail(e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { detail, .. } | StoreError::Remote { detail, .. } => detail.clone(),
        other => other.to_string(),
    }
}

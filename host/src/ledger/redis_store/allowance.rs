//! `fail-open-with-allowance`: while Redis does not answer, a replica admits
//! each tenant's calls against a small local allowance instead of refusing
//! them. Their charges are kept in the outbox and written to Redis when it
//! answers again, exactly once (each carries an id of its own); the
//! allowance renews once everything kept is written.
//!
//! The trade is stated plainly: during an outage a tenant may pass its
//! budget by up to the allowance on each replica. Every charge is still
//! recorded once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::ids::TenantId;
use crate::ledger::error::{ReserveError, StoreError};
use crate::ledger::reservation::{Actual, Released, Reservation, ReservationId, ReserveRequest};
use crate::ledger::store::TenantLedgerState;
use crate::money::NanoUsd;

/// Ids of local holds have this bit set; Redis' own ids never reach it.
const LOCAL: u64 = 1 << 63;

#[derive(Default)]
struct Local {
    /// Settled on the allowance during this outage.
    used: NanoUsd,
    /// Open local holds: id → (cost at its ceiling, tokens).
    open: HashMap<u64, (NanoUsd, u64)>,
}

impl Local {
    fn held(&self) -> NanoUsd {
        self.open
            .values()
            .fold(NanoUsd::ZERO, |sum, (cost, _)| sum.saturating_add(*cost))
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
}

impl Allowance {
    pub(super) fn new(limit: NanoUsd) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Allowance {
            limit,
            nonce: format!("{:x}{:x}", std::process::id(), started),
            next: AtomicU64::new(1),
            tenants: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn is_local(id: ReservationId) -> bool {
        id.0 & LOCAL != 0
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

    /// A hold on the allowance, or the refusal that says it is spent.
    pub(super) fn reserve(
        &self,
        tenant: &TenantId,
        request: &ReserveRequest,
        ttl_ms: u64,
        cause: StoreError,
    ) -> Result<Reservation, ReserveError> {
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
        local.open.insert(id, (ceiling, request.tokens));
        let period_start_ms = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .map_or(0, |s| s.period_start_ms);
        tracing::warn!(tenant = %tenant, "the ledger store does not answer; admitted on the local allowance");
        Ok(Reservation {
            id: ReservationId(id),
            cost: request.cost,
            tokens: request.tokens,
            expires_at_ms: request.now_ms.saturating_add(ttl_ms),
            period_start_ms,
        })
    }

    /// Closes a local hold with its charge; the id to write the charge under.
    pub(super) fn settle(&self, tenant: &TenantId, id: ReservationId, actual: Actual) -> Option<String> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let local = tenants.get_mut(tenant)?;
        local.open.remove(&id.0)?;
        local.used = local.used.saturating_add(actual.cost);
        Some(format!("c{}-{}", self.nonce, id.0 & !LOCAL))
    }

    pub(super) fn release(&self, tenant: &TenantId, id: ReservationId) -> Option<Released> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let (held, _) = tenants.get_mut(tenant)?.open.remove(&id.0)?;
        Some(Released { id, held })
    }

    /// Everything kept is written: a new outage starts with a whole allowance.
    pub(super) fn renew(&self) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.retain(|_, local| !local.open.is_empty());
        for local in tenants.values_mut() {
            local.used = NanoUsd::ZERO;
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

//! A custom ledger store: the ledger's operations are whole operations
//! (reserve, settle, release, expire), so a store can add behaviour around
//! them. This one keeps the figures in the built-in in-memory store and
//! mirrors every settled charge to a billing feed, as a service might send
//! them to its own billing system.
//!
//! ```sh
//! cargo run -p tollgate-host --example custom_ledger_store
//! ```

use std::sync::Mutex;

use tollgate_host::TenantId;
use tollgate_host::ledger::{
    Actual, Ledger, LedgerError, LedgerSettings, LedgerStore, MemoryStore, PeriodTotals, Released, Reservation,
    ReservationId, ReserveError, ReserveRequest, Settled, StoreError, TenantLedgerState, TenantLimits,
};
use tollgate_host::money::NanoUsd;

/// Charges as the billing feed receives them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Charge {
    tenant: TenantId,
    cost: NanoUsd,
    tokens: u64,
}

struct BillingFeed {
    inner: MemoryStore,
    feed: Mutex<Vec<Charge>>,
}

impl LedgerStore for BillingFeed {
    fn reserve(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<Reservation, ReserveError> {
        self.inner.reserve(tenant, limits, request, ttl_ms)
    }

    fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let settled = self.inner.settle(tenant, limits, id, actual, now_ms)?;
        // Only a charge the ledger accepted reaches the feed, exactly once.
        self.feed.lock().unwrap_or_else(|e| e.into_inner()).push(Charge {
            tenant: tenant.clone(),
            cost: actual.cost,
            tokens: actual.tokens,
        });
        Ok(settled)
    }

    fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        self.inner.release(tenant, limits, id, now_ms)
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.inner.expire(now_ms)
    }

    fn load(&self, tenant: &TenantId, limits: &TenantLimits, now_ms: u64) -> Result<TenantLedgerState, StoreError> {
        self.inner.load(tenant, limits, now_ms)
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, StoreError> {
        self.inner.history(tenant)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = BillingFeed {
        inner: MemoryStore::new(),
        feed: Mutex::default(),
    };
    let ledger = Ledger::new(store, LedgerSettings::default());
    let acme = TenantId::new("acme")?;
    ledger.set_limits(&acme, TenantLimits::monthly(NanoUsd::from_cents(10)));
    let now_ms = 1_750_000_000_000;

    // Two calls: one settles from its real usage, one fails and is released.
    let first = ledger.reserve(
        &acme,
        ReserveRequest {
            cost: NanoUsd::from_cents(3),
            tokens: 2_000,
            now_ms,
            ceiling: None,
        },
    )?;
    let second = ledger.reserve(
        &acme,
        ReserveRequest {
            cost: NanoUsd::from_cents(3),
            tokens: 2_000,
            now_ms,
            ceiling: None,
        },
    )?;
    ledger.settle(
        &acme,
        first.id,
        Actual {
            cost: NanoUsd::from_cents(1),
            tokens: 700,
        },
        now_ms + 900,
    )?;
    ledger.release(&acme, second.id, now_ms + 950)?;
    // A third call would pass the budget's worst case: refused, nothing held.
    let refused = ledger.reserve(
        &acme,
        ReserveRequest {
            cost: NanoUsd::from_cents(10),
            tokens: 1,
            now_ms,
            ceiling: None,
        },
    );
    println!("over-budget reservation: {}", refused.expect_err("the budget holds"));

    let state = ledger.snapshot(&acme, now_ms + 1_000)?;
    let feed = ledger.store().feed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    println!(
        "spent {} of {}, {} open holds",
        state.spent, state.limit, state.open_reservations
    );
    println!("billing feed: {feed:?}");
    assert_eq!(state.spent, NanoUsd::from_cents(1));
    assert_eq!(feed.len(), 1, "one settled call, one charge");
    Ok(())
}

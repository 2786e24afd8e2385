//! One tenant's book — the accounting rules every local store shares — and
//! the shelf of books by tenant. A book is changed only under its own mutex,
//! so tenants never wait for each other; each change is reported to a sink so
//! the durable store can write it through in the same order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use chrono_tz::Tz;

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::error::{LedgerError, ReserveError};
use super::limits::TenantLimits;
use super::period::{Period, PeriodTotals};
use super::reservation::{Actual, OpenMap, OpenReservation, Released, ReservationId, ReserveRequest, Settled};
use super::store::TenantLedgerState;
use super::window::MinuteWindow;

/// Closed periods kept in memory per tenant (a year of daily periods).
const HISTORY_CAP: usize = 400;
/// Recently expired reservations kept so a late settle still charges.
/// The gateway refuses a TTL shorter than its longest call, so expiries
/// while the process lives are rare; this bounds the memory all the same.
const EXPIRED_MEMORY: usize = 1024;

/// A change to write through, in the order it was made. Only a store that
/// persists reads it.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "durable"), allow(dead_code))]
pub enum Change<'a> {
    Opened(&'a OpenReservation),
    Closed(ReservationId),
    Totals(&'a PeriodTotals),
}

pub(crate) struct TenantBook {
    tenant: TenantId,
    /// The (period, time zone) `current` was computed for; `None` until the
    /// first operation with limits.
    basis: Option<(Period, Tz)>,
    current: PeriodTotals,
    history: BTreeMap<u64, PeriodTotals>,
    /// Always the sum of `open[..].cost`.
    reserved: NanoUsd,
    /// Always the sum of `open[..].ceiling - open[..].cost`: how far the open
    /// calls may still overrun their holds.
    exposure: NanoUsd,
    open: OpenMap,
    /// No open reservation expires before this (a lower bound: a sweep makes it exact).
    earliest_expiry: u64,
    recently_expired: VecDeque<(OpenReservation, u64)>,
    window: MinuteWindow,
}

impl TenantBook {
    pub(crate) fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub(crate) fn new(tenant: TenantId) -> Self {
        TenantBook {
            tenant,
            basis: None,
            current: PeriodTotals::default(),
            history: BTreeMap::new(),
            reserved: NanoUsd::ZERO,
            exposure: NanoUsd::ZERO,
            open: OpenMap::default(),
            earliest_expiry: u64::MAX,
            recently_expired: VecDeque::new(),
            window: MinuteWindow::default(),
        }
    }

    /// Put back a period's totals read from disk.
    #[cfg_attr(not(feature = "durable"), allow(dead_code))]
    pub(crate) fn restore_period(&mut self, totals: PeriodTotals) {
        self.history.insert(totals.start_ms, totals);
    }

    /// Put back an open reservation read from disk.
    #[cfg_attr(not(feature = "durable"), allow(dead_code))]
    pub(crate) fn restore_open(&mut self, r: OpenReservation) {
        if self.open.insert(r.id, r).is_none() {
            self.reserved = self.reserved.saturating_add(r.cost);
            self.exposure = self.exposure.saturating_add(r.ceiling.saturating_sub(r.cost));
            self.earliest_expiry = self.earliest_expiry.min(r.expires_at_ms);
        }
    }

    pub(crate) fn reserve(
        &mut self,
        limits: &TenantLimits,
        request: ReserveRequest,
        id: ReservationId,
        ttl_ms: u64,
        sink: &mut dyn FnMut(Change<'_>),
    ) -> Result<OpenReservation, ReserveError> {
        let now_ms = request.now_ms;
        self.catch_up(limits, now_ms, sink);
        let ceiling = request.ceiling.unwrap_or(request.cost).max(request.cost);
        // Every open call counted at the most it can cost: a settle above its
        // hold then still lands inside the budget.
        let committed =
            u128::from(self.current.spent.get()) + u128::from(self.reserved.get()) + u128::from(self.exposure.get());
        if committed + u128::from(ceiling.get()) > u128::from(limits.budget.get()) {
            return Err(ReserveError::Budget {
                limit: limits.budget,
                spent: self.current.spent,
                reserved: self.reserved.saturating_add(self.exposure),
                requested: ceiling,
                period_end_ms: self.current.end_ms,
            });
        }
        self.window.check(limits.rpm, limits.tpm, request.tokens, now_ms)?;
        let r = OpenReservation {
            id,
            cost: request.cost,
            ceiling,
            tokens: request.tokens,
            minute: self.window.minute(),
            period_start_ms: self.current.start_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        self.window.admit(request.tokens);
        self.reserved = self.reserved.saturating_add(r.cost);
        self.exposure = self.exposure.saturating_add(r.ceiling.saturating_sub(r.cost));
        self.earliest_expiry = self.earliest_expiry.min(r.expires_at_ms);
        self.open.insert(id, r);
        sink(Change::Opened(&r));
        Ok(r)
    }

    pub(crate) fn settle(
        &mut self,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
        sink: &mut dyn FnMut(Change<'_>),
    ) -> Result<Settled, LedgerError> {
        self.catch_up(limits, now_ms, sink);
        // A call that outlived its hold still ran: it is charged, never free.
        let (r, late) = match self.close(id, sink) {
            Ok(r) => (r, false),
            Err(LedgerError::Expired { .. }) => match self.take_expired(id) {
                Some(r) => (r, true),
                None => {
                    return Err(LedgerError::UnknownReservation {
                        tenant: self.tenant.clone(),
                        id,
                    });
                }
            },
            Err(e) => return Err(e),
        };
        self.window.correct(r.minute, r.tokens, actual.tokens);
        // Charged to the period that admitted it (the current one unless the
        // call straddled a boundary, or that period is no longer in memory).
        let totals = match self.history.get_mut(&r.period_start_ms) {
            Some(old) if r.period_start_ms != self.current.start_ms => old,
            _ => &mut self.current,
        };
        totals.spent = totals.spent.saturating_add(actual.cost);
        totals.used_tokens = totals.used_tokens.saturating_add(actual.tokens);
        totals.calls = totals.calls.saturating_add(1);
        sink(Change::Totals(totals));
        Ok(Settled {
            id,
            held: if late { NanoUsd::ZERO } else { r.cost },
            late,
            charged: actual.cost,
            period_start_ms: totals.start_ms,
            period_spent: totals.spent,
        })
    }

    pub(crate) fn release(
        &mut self,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
        sink: &mut dyn FnMut(Change<'_>),
    ) -> Result<Released, LedgerError> {
        self.catch_up(limits, now_ms, sink);
        let r = match self.close(id, sink) {
            Ok(r) => r,
            Err(e @ LedgerError::Expired { .. }) => {
                // The call provably never ran: nothing may charge it later.
                self.take_expired(id);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.window.correct(r.minute, r.tokens, 0);
        Ok(Released { id, held: r.cost })
    }

    /// Return the holds of reservations that expired by `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64, sink: &mut dyn FnMut(Change<'_>)) -> usize {
        if now_ms < self.earliest_expiry {
            return 0;
        }
        let mut expired = Vec::new();
        let mut earliest = u64::MAX;
        self.open.retain(|_, r| {
            if r.expires_at_ms <= now_ms {
                expired.push(*r);
                false
            } else {
                earliest = earliest.min(r.expires_at_ms);
                true
            }
        });
        self.earliest_expiry = earliest;
        // Oldest first, so the error memory keeps the newest.
        expired.sort_unstable_by_key(|r| (r.expires_at_ms, r.id));
        for r in &expired {
            self.reserved = self.reserved.saturating_sub(r.cost);
            self.exposure = self.exposure.saturating_sub(r.ceiling.saturating_sub(r.cost));
            self.window.correct(r.minute, r.tokens, 0);
            if self.recently_expired.len() == EXPIRED_MEMORY {
                self.recently_expired.pop_front();
            }
            self.recently_expired.push_back((*r, r.expires_at_ms));
            sink(Change::Closed(r.id));
        }
        expired.len()
    }

    pub(crate) fn state(
        &mut self,
        limits: &TenantLimits,
        now_ms: u64,
        sink: &mut dyn FnMut(Change<'_>),
    ) -> TenantLedgerState {
        self.catch_up(limits, now_ms, sink);
        TenantLedgerState {
            limit: limits.budget,
            spent: self.current.spent,
            reserved: self.reserved,
            open_reservations: self.open.len(),
            period: limits.period,
            period_start_ms: self.current.start_ms,
            period_end_ms: self.current.end_ms,
            window_requests: self.window.requests(),
            window_tokens: self.window.tokens(),
            rpm: limits.rpm,
            tpm: limits.tpm,
            included_tokens: limits.included_tokens,
            used_tokens: self.current.used_tokens,
        }
    }

    /// Every period kept, the current one included, oldest first.
    pub(crate) fn history(&self) -> Vec<PeriodTotals> {
        let mut all: Vec<PeriodTotals> = self.history.values().copied().collect();
        if self.basis.is_some() {
            all.push(self.current);
            all.sort_unstable_by_key(|p| p.start_ms);
        }
        all
    }

    /// Bring the period, expiries and minute window up to `now_ms`.
    fn catch_up(&mut self, limits: &TenantLimits, now_ms: u64, sink: &mut dyn FnMut(Change<'_>)) {
        self.roll_period(limits, now_ms);
        self.expire(now_ms, sink);
        self.window.advance(now_ms);
    }

    /// Start a new period when `now_ms` has passed the current one's end (or
    /// the limits changed its kind or time zone). Never goes back: a call
    /// whose clock is behind counts in the current period.
    fn roll_period(&mut self, limits: &TenantLimits, now_ms: u64) {
        let basis = (limits.period, limits.time_zone);
        if self.basis == Some(basis) && now_ms < self.current.end_ms {
            return;
        }
        let bounds = limits.period.containing(limits.time_zone, now_ms);
        if self.basis.is_some() {
            if self.basis == Some(basis) && bounds.start_ms <= self.current.start_ms {
                return;
            }
            // Kept even when nothing was charged yet: calls it admitted may still settle into it.
            self.history.insert(self.current.start_ms, self.current);
        }
        self.current = self.history.remove(&bounds.start_ms).unwrap_or(PeriodTotals {
            start_ms: bounds.start_ms,
            ..PeriodTotals::default()
        });
        self.current.end_ms = bounds.end_ms;
        self.basis = Some(basis);
        while self.history.len() > HISTORY_CAP {
            self.history.pop_first();
        }
    }

    /// Take an expired reservation out of the memory, so a second late settle is refused.
    fn take_expired(&mut self, id: ReservationId) -> Option<OpenReservation> {
        let at = self.recently_expired.iter().position(|(e, _)| e.id == id)?;
        self.recently_expired.remove(at).map(|(r, _)| r)
    }

    /// Take `id` out of the open set, or say precisely why it is not there.
    fn close(&mut self, id: ReservationId, sink: &mut dyn FnMut(Change<'_>)) -> Result<OpenReservation, LedgerError> {
        let Some(r) = self.open.remove(&id) else {
            let tenant = self.tenant.clone();
            return Err(match self.recently_expired.iter().find(|(e, _)| e.id == id) {
                Some(&(_, expired_at_ms)) => LedgerError::Expired {
                    tenant,
                    id,
                    expired_at_ms,
                },
                None => LedgerError::UnknownReservation { tenant, id },
            });
        };
        self.reserved = self.reserved.saturating_sub(r.cost);
        self.exposure = self.exposure.saturating_sub(r.ceiling.saturating_sub(r.cost));
        sink(Change::Closed(id));
        Ok(r)
    }
}

/// Every tenant's book. The map is locked only to find or add a book.
#[derive(Default)]
pub(crate) struct Books {
    by_tenant: RwLock<HashMap<TenantId, Arc<Mutex<TenantBook>>>>,
}

impl Books {
    pub(crate) fn get(&self, tenant: &TenantId) -> Arc<Mutex<TenantBook>> {
        if let Some(book) = self
            .by_tenant
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return Arc::clone(book);
        }
        let mut map = self.by_tenant.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(tenant.clone())
                .or_insert_with(|| Arc::new(Mutex::new(TenantBook::new(tenant.clone())))),
        )
    }

    pub(crate) fn all(&self) -> Vec<Arc<Mutex<TenantBook>>> {
        self.by_tenant
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// Lock a book. No code panics while holding one, but if a caller's thread
/// did, the book's figures are still consistent: each change is made whole.
pub(crate) fn lock(book: &Mutex<TenantBook>) -> MutexGuard<'_, TenantBook> {
    book.lock().unwrap_or_else(PoisonError::into_inner)
}

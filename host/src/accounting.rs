//! The budget brain as one object: the ledger that holds and charges money,
//! and the alerts that watch where spend is heading. It builds the
//! `tenant-state` a policy sees and keeps the two in step, so a charge is
//! never recorded in one and missed by the other.

use std::sync::Arc;

use chrono_tz::Tz;

use crate::alerts::{Alerts, Assessment, Level};
use crate::contract::local_time::period_days;
use crate::contract::{self, AlertLevel, LocalTime, TenantState};
use crate::ids::TenantId;
use crate::ledger::{
    Actual, Durable, Ledger, LedgerError, LedgerStore, Period, Released, Reservation, ReservationId, ReserveError,
    ReserveRequest, Settled, TenantLedgerState,
};

/// Ledger and alerts for every tenant. `Send + Sync`; share it in an `Arc`.
pub struct Accounting<S> {
    ledger: Ledger<S>,
    alerts: Arc<Alerts>,
}

impl<S: LedgerStore> Accounting<S> {
    pub fn new(ledger: Ledger<S>, alerts: Arc<Alerts>) -> Self {
        Accounting { ledger, alerts }
    }

    pub fn ledger(&self) -> &Ledger<S> {
        &self.ledger
    }

    pub fn alerts(&self) -> &Arc<Alerts> {
        &self.alerts
    }

    /// The state a policy decides on, in one call: the ledger's figures from
    /// memory, the indicators and the alert levels (re-assessed, so a level
    /// change is published as soon as a call sees it).
    pub fn tenant_state(&self, tenant: &TenantId, tier: &str, now_ms: u64) -> Result<TenantState, LedgerError> {
        let ledger = self.ledger.snapshot(tenant, now_ms)?;
        let assessment = self
            .alerts
            .assess(tenant, now_ms, ledger.spent, ledger.limit, ledger.period_end_ms);
        Ok(build_state(tier, &ledger, &assessment, self.time_zone(tenant), now_ms))
    }

    /// [`tenant_state`](Self::tenant_state), awaiting a ledger across a network.
    pub async fn tenant_state_async(
        &self,
        tenant: &TenantId,
        tier: &str,
        now_ms: u64,
    ) -> Result<TenantState, LedgerError> {
        let ledger = self.ledger.snapshot_async(tenant, now_ms).await?;
        let assessment = self
            .alerts
            .assess(tenant, now_ms, ledger.spent, ledger.limit, ledger.period_end_ms);
        Ok(build_state(tier, &ledger, &assessment, self.time_zone(tenant), now_ms))
    }

    /// The tenant's time zone (UTC for a tenant without limits).
    fn time_zone(&self, tenant: &TenantId) -> Tz {
        self.ledger.limits(tenant).map_or(Tz::UTC, |limits| limits.time_zone)
    }

    pub fn reserve(&self, tenant: &TenantId, request: ReserveRequest) -> Result<Reservation, ReserveError> {
        self.ledger.reserve(tenant, request)
    }

    /// [`reserve`](Self::reserve), awaiting a ledger across a network.
    pub async fn reserve_async(&self, tenant: &TenantId, request: ReserveRequest) -> Result<Reservation, ReserveError> {
        self.ledger.reserve_async(tenant, request).await
    }

    /// [`settle`](Self::settle), awaiting a ledger across a network.
    pub async fn settle_async(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let settled = self.ledger.settle_async(tenant, id, actual, now_ms).await;
        match &settled {
            Ok(settled) => self.alerts.record_spend(tenant, now_ms, settled.charged),
            // Kept for Redis's return: it is spend all the same.
            Err(LedgerError::Deferred { charge, .. }) => self.alerts.record_spend(tenant, now_ms, *charge),
            Err(_) => {}
        }
        settled
    }

    /// [`release`](Self::release), awaiting a ledger across a network.
    pub async fn release_async(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        self.ledger.release_async(tenant, id, now_ms).await
    }

    /// Charges the real usage and feeds it to the burn-rate history.
    pub fn settle(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let settled = self.ledger.settle(tenant, id, actual, now_ms)?;
        self.alerts.record_spend(tenant, now_ms, settled.charged);
        Ok(settled)
    }

    /// [`settle`](Self::settle) for async callers; see [`Ledger::settle_queued`].
    pub fn settle_queued(
        &self,
        tenant: &TenantId,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<(Settled, Durable), LedgerError> {
        let (settled, durable) = self.ledger.settle_queued(tenant, id, actual, now_ms)?;
        self.alerts.record_spend(tenant, now_ms, settled.charged);
        Ok((settled, durable))
    }

    pub fn release(&self, tenant: &TenantId, id: ReservationId, now_ms: u64) -> Result<Released, LedgerError> {
        self.ledger.release(tenant, id, now_ms)
    }

    pub fn expire(&self, now_ms: u64) -> Result<usize, LedgerError> {
        self.ledger.expire(now_ms)
    }
}

/// Maps the ledger's figures and the alert assessment onto the contract.
pub fn build_state(
    tier: &str,
    ledger: &TenantLedgerState,
    assessment: &Assessment,
    zone: Tz,
    now_ms: u64,
) -> TenantState {
    let indicators = &assessment.indicators;
    let (days_elapsed, days_remaining) = period_days(zone, ledger.period_start_ms, ledger.period_end_ms, now_ms);
    TenantState {
        plan: contract::Plan {
            tier: tier.to_owned(),
            included_tokens: ledger.included_tokens,
            used_tokens: ledger.used_tokens,
        },
        budget: contract::Budget {
            limit: ledger.limit.get(),
            spent: ledger.spent.get(),
            reserved: ledger.reserved.get(),
            period: period(ledger.period),
            period_start_ms: ledger.period_start_ms,
            period_end_ms: ledger.period_end_ms,
            days_elapsed,
            days_remaining,
        },
        indicators: contract::Indicators {
            burn_rate_short: indicators.burn_rate_short.get(),
            burn_rate_long: indicators.burn_rate_long.get(),
            baseline_burn_rate: indicators.baseline_burn_rate.get(),
            forecast_spend: indicators.forecast_spend.get(),
        },
        window: contract::RateWindow {
            requests: ledger.window_requests,
            tokens: ledger.window_tokens,
            rpm_limit: ledger.rpm,
            tpm_limit: ledger.tpm,
        },
        alert: level(assessment.level),
        aggregate_alert: level(assessment.aggregate),
        clock: LocalTime::at(zone, now_ms),
        open_reservations: u32::try_from(ledger.open_reservations).unwrap_or(u32::MAX),
    }
}

fn period(period: Period) -> contract::Period {
    match period {
        Period::Daily => contract::Period::Daily,
        Period::Weekly => contract::Period::Weekly,
        Period::Monthly => contract::Period::Monthly,
    }
}

fn level(level: Level) -> AlertLevel {
    match level {
        Level::Green => AlertLevel::Green,
        Level::Yellow => AlertLevel::Yellow,
        Level::Orange => AlertLevel::Orange,
        Level::Red => AlertLevel::Red,
    }
}

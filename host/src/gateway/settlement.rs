//! Ending calls: every reservation is settled from the real usage, or
//! charged at its hold, or released, exactly once; every call writes one
//! invocation record and leaves the in-flight count.
//!
//! Invariants:
//! * A call that may have cost money is never free: without a usage that
//!   can be priced, the hold itself is charged.
//! * [`Settlement::finish`] runs once per started call (a stream's by its
//!   pump), so `in_flight` returns to zero when the gateway is idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::invocation_log::{Billing, InvocationLog, InvocationRecord};
use super::metrics::Metrics;
use super::shadowing::{self, Outcome};
use super::trace::{Trace, now_ms, operation_name};
use crate::accounting::Accounting;
use crate::estimate::Estimator;
use crate::ids::{ModelId, TenantId};
use crate::ledger::{Actual, LedgerError, LedgerStore, ReservationId, Settled, StoreError};
use crate::pricing::{Catalog, Charge, Metered, Resolved, ServedAs};

/// The ledger the gateway charges, whatever its store.
pub type GatewayAccounting = Accounting<Box<dyn LedgerStore>>;

/// What a call's charge depends on besides its response.
#[derive(Clone)]
pub(super) struct CallBasis {
    /// The model that served it (a downgrade's target, or the one asked for).
    pub(super) served: ModelId,
    /// The input estimate before calibration, to calibrate against the real count.
    pub(super) raw_estimate: u64,
    /// The tier and latency mode the request asked for, where the response is silent.
    pub(super) asked: ServedAs,
}

/// A reservation to end exactly once.
pub(super) struct Hold {
    pub(super) accounting: Arc<GatewayAccounting>,
    pub(super) tenant: TenantId,
    pub(super) id: ReservationId,
    pub(super) cost: crate::money::NanoUsd,
    pub(super) tokens: u64,
}

impl Hold {
    pub(super) fn as_actual(&self) -> Actual {
        Actual {
            cost: self.cost,
            tokens: self.tokens,
        }
    }

    /// Charges `actual`, returning once the charge is durable. A store that
    /// queues its writes is called in place and awaited; any other store that
    /// may block runs off the async workers.
    pub(super) async fn settle(&self, actual: Actual) -> Result<Settled, LedgerError> {
        if self.accounting.ledger().remote().is_some() {
            return self
                .accounting
                .settle_async(&self.tenant, self.id, actual, now_ms())
                .await;
        }
        let store = self.accounting.ledger().store();
        if store.queues_settles() || !store.may_block() {
            let (settled, durable) = self.accounting.settle_queued(&self.tenant, self.id, actual, now_ms())?;
            durable.wait().await?;
            return Ok(settled);
        }
        let accounting = Arc::clone(&self.accounting);
        let tenant = self.tenant.clone();
        let id = self.id;
        tokio::task::spawn_blocking(move || accounting.settle(&tenant, id, actual, now_ms()))
            .await
            .map_err(|e| StoreError::Stopped(format!("the settle task ended: {e}")))?
    }

    /// Returns the hold uncharged: only for a call the upstream provably never ran.
    pub(super) async fn release(&self, trace: &mut Trace) {
        let store = self.accounting.ledger().store();
        // A queueing store releases in memory and writes through without waiting.
        let released = if self.accounting.ledger().remote().is_some() {
            Ok(self.accounting.release_async(&self.tenant, self.id, now_ms()).await)
        } else if store.may_block() && !store.queues_settles() {
            let accounting = Arc::clone(&self.accounting);
            let tenant = self.tenant.clone();
            let id = self.id;
            tokio::task::spawn_blocking(move || accounting.release(&tenant, id, now_ms()))
                .await
                .map_err(|e| e.to_string())
        } else {
            Ok(self.accounting.release(&self.tenant, self.id, now_ms()))
        };
        trace.charged_from = match released {
            Ok(Ok(_)) => "released".into(),
            Ok(Err(LedgerError::ReleaseDeferred { .. })) => {
                tracing::warn!(tenant = %self.tenant, "the ledger did not answer; the release is kept and written when it does");
                "released".into()
            }
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) => format!("failed: {e}"),
        };
    }
}

/// What ends calls (the hold carries its ledger): the prices, the estimator to calibrate, the
/// metrics and the log.
pub(super) struct Settlement {
    pub(super) catalog: Arc<Catalog>,
    pub(super) estimator: Arc<Estimator>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) log: Option<Arc<InvocationLog>>,
    /// Recent usage for the dashboard, fed from every record.
    pub(super) series: Arc<super::usage_series::UsageSeries>,
    /// Calls not yet logged, streams included; `idle` wakes waiters at zero.
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Settlement {
    pub(super) fn new(
        catalog: Arc<Catalog>,
        estimator: Arc<Estimator>,
        metrics: Arc<Metrics>,
        log: Option<Arc<InvocationLog>>,
    ) -> Settlement {
        Settlement {
            catalog,
            estimator,
            metrics,
            log,
            series: Arc::default(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// A call starts; [`Settlement::finish`] ends it.
    pub(super) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// Settles from what the upstream metered, or charges the hold when that
    /// cannot be read or priced (`Err` says why).
    pub(super) async fn charge(
        &self,
        hold: &Hold,
        metered: Result<Metered, String>,
        call: &CallBasis,
        trace: &mut Trace,
    ) {
        let served = &call.served;
        // One resolution prices the call and describes it in the record.
        let priced = metered.and_then(|m| {
            let resolved = self.catalog.resolve(served.as_str()).map_err(|e| e.to_string())?;
            let charge = resolved
                .rates
                .charge(&m)
                .map_err(|why| format!("cannot price a call of {served}: {why}"))?;
            Ok((m, charge, self.billing(&resolved, charge)))
        });
        let (actual, from) = match priced {
            Ok((metered, charge, billing)) => {
                let usage = metered.usage;
                self.estimator
                    .observe(served.as_str(), call.raw_estimate, usage.prompt_tokens());
                trace.usage = Some(usage);
                trace.billing = Some(billing);
                let tokens = usage.prompt_tokens().saturating_add(usage.output_tokens);
                (
                    Actual {
                        cost: charge.cost,
                        tokens,
                    },
                    "usage",
                )
            }
            Err(why) => {
                trace.billing_note = Some(why);
                (hold.as_actual(), "reservation")
            }
        };
        if from == "reservation"
            && let Some(suppressed) = crate::log_gate::HOLD_CHARGES.admit(hold.tenant.as_str())
        {
            tracing::warn!(
                tenant = %hold.tenant,
                request_id = %trace.request_id,
                why = crate::text::escape_controls(trace.billing_note.as_deref().unwrap_or_default()).as_ref(),
                suppressed,
                "no usage that can be priced; charging the reservation"
            );
        }
        trace.charged_from = from.to_owned();
        match hold.settle(actual).await {
            Ok(settled) => {
                let charged = settled.charged.get();
                trace.cost_nano_usd = charged;
                if settled.late {
                    // Charged all the same; the TTL check at load should make this rare.
                    tracing::warn!(
                        tenant = %hold.tenant,
                        request_id = %trace.request_id,
                        "the call outlived its reservation; charged after the hold had expired"
                    );
                    trace.hold_expired = true;
                }
                let tenant = hold.tenant.as_str();
                self.metrics.add_cost(tenant, charged);
                if let (Some(u), Some(billing)) = (&trace.usage, &trace.billing) {
                    // The resolved model, not the caller's spelling: labels stay bounded.
                    let model = billing.base_model.as_str();
                    self.metrics.add_tokens(tenant, model, "input", u.input_tokens);
                    self.metrics.add_tokens(tenant, model, "output", u.output_tokens);
                    self.metrics
                        .add_tokens(tenant, model, "cache-read", u.cache_read_input_tokens);
                    self.metrics
                        .add_tokens(tenant, model, "cache-write", u.cache_write_input_tokens);
                }
            }
            Err(LedgerError::Deferred { charge, .. }) => {
                // Kept in this process and written when the store answers: logged as charged.
                tracing::warn!(tenant = %hold.tenant, request_id = %trace.request_id, "the ledger did not answer; the charge is kept and written when it does");
                trace.cost_nano_usd = charge.get();
                self.metrics.add_cost(hold.tenant.as_str(), charge.get());
            }
            Err(e) => {
                tracing::error!(tenant = %hold.tenant, error = %e, "could not settle a call");
                trace.charged_from = format!("failed: {e}");
            }
        }
    }

    /// What the record needs to reproduce a charge.
    fn billing(&self, resolved: &Resolved<'_>, charge: Charge) -> Billing {
        Billing {
            region: self.catalog.region().to_owned(),
            price_book: self.catalog.version().to_owned(),
            base_model: resolved.base_model.to_owned(),
            prefix: resolved.prefix.map(str::to_owned),
            service_tier: charge.served_as.tier,
            latency: charge.served_as.latency,
            long_context: charge.long_context,
            unit_prices: charge.unit_prices,
            usage: None,
        }
    }

    /// Step 10: the invocation record and the metrics. A call with a shadow
    /// decision is counted out once that is compared and in its record.
    pub(super) async fn finish(self: &Arc<Self>, trace: &mut Trace) {
        if trace.logged {
            return;
        }
        self.metrics.tenant_verdict(&trace.tenant, &trace.decision);
        self.metrics.response(operation_name(trace.operation), trace.status);
        if let Some(pending) = trace.shadow.as_ref().and_then(shadowing::take) {
            let ran = matches!(trace.charged_from.as_str(), "usage" | "reservation");
            let usage = trace.usage;
            let served_as = trace.billing.as_ref().map(|b| ServedAs {
                tier: b.service_tier,
                latency: b.latency,
            });
            let mut record = trace.take_record();
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let served_model = record
                    .tollgate
                    .served_model_id
                    .clone()
                    .unwrap_or_else(|| record.tollgate.requested_model_id.clone());
                let outcome = Outcome {
                    ran,
                    served_model: &served_model,
                    cost_nano_usd: record.tollgate.cost_nano_usd,
                    usage,
                    served_as,
                };
                let fields = pending.conclude(outcome, &this.catalog, &this.metrics).await;
                record.tollgate.shadow = Some(fields);
                this.written(record).await;
            });
            return;
        }
        self.written(trace.take_record()).await;
    }

    /// Writes a finished call's record and counts the call out. While the
    /// log's queue is full the call waits here, still counted in.
    pub(super) async fn written(&self, record: InvocationRecord) {
        self.series.record(&record, now_ms());
        if let Some(log) = &self.log {
            log.append(record).await;
        }
        // Each call is finished exactly once (a stream by its pump).
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Calls started and not yet charged and logged (streams still open included).
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no call is in flight: every started call has been
    /// settled or released and logged. For draining and for tests.
    pub(super) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a wake-up between the two is not lost.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                // Every finished call's record is on disk, too.
                if let Some(log) = &self.log {
                    log.flush().await;
                }
                return;
            }
            notified.await;
        }
    }
}

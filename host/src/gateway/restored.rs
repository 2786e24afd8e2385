//! Holds whose calls' process is gone: found open at startup (the gateway
//! was killed, crashed, lost its machine), or adopted from a replica whose
//! lease lapsed. Each call was forwarded only once its hold was durable,
//! Bedrock may have run and billed it, and no usage will ever come for it.
//! So each is charged its hold, exactly once (a settle under its id), and
//! logged like any call charged its hold: `reconcile` then matches. On a
//! Redis fleet the call's own replica may yet write its outcome, which then
//! replaces that charge in the ledger; its record supersedes this one.

use std::sync::Arc;

use super::invocation_log::{InvocationRecord, Latency, SCHEMA_TYPE, SCHEMA_VERSION, TollgateFields, timestamp};
use super::settlement::{GatewayAccounting, Hold, Settlement};
use super::trace::now_ms;
use crate::ledger::{LedgerError, ReservationId, RestoredHold};

/// How a restored hold's record's request id begins.
pub const REQUEST_PREFIX: &str = "tollgate-restored-";

/// Whether a record with this request id is a restored charge.
pub fn is_restored(request_id: &str) -> bool {
    request_id.starts_with(REQUEST_PREFIX)
}

/// The hold that joins a restored charge to its call's own record, which
/// only a Redis fleet writes both of (see the module's comment). Allowance
/// ids are unique within one process only and join nothing.
pub fn joining_hold(reservation: Option<u64>) -> Option<u64> {
    reservation.filter(|id| !ReservationId(*id).is_local())
}

/// What a restored hold's record says of the call it covered, which the
/// ledger does not keep: only its tenant, hold and tokens survive.
const UNKNOWN: &str = "unknown";

/// Charges every restored hold and logs it; the number charged.
pub(super) async fn charge(accounting: &Arc<GatewayAccounting>, settlement: &Settlement) -> usize {
    let mut charged = 0;
    for hold in accounting.ledger().store().take_restored() {
        let settling = Hold {
            accounting: Arc::clone(accounting),
            tenant: hold.tenant.clone(),
            id: hold.id,
            cost: hold.cost,
            tokens: hold.tokens,
        };
        let settled = match settling.settle(settling.as_actual()).await {
            Ok(settled) => Ok(settled.charged.get()),
            // Kept in this process and written when the store answers again.
            Err(LedgerError::Deferred { charge, .. }) => Ok(charge.get()),
            Err(e) => Err(e),
        };
        match settled {
            Ok(cost) => {
                charged += 1;
                settlement.metrics.add_cost(hold.tenant.as_str(), cost);
                tracing::warn!(
                    tenant = %hold.tenant,
                    reservation = %hold.id,
                    charged_nano_usd = cost,
                    "charged the hold of a call in flight when its gateway stopped"
                );
                settlement.begin();
                settlement.written(record(&hold, cost, now_ms())).await;
            }
            Err(e) => tracing::error!(
                tenant = %hold.tenant,
                reservation = %hold.id,
                error = %e,
                "could not charge the hold of a call in flight when its gateway stopped"
            ),
        }
    }
    charged
}

/// The record of a restored hold's charge, in the shape of every call's.
fn record(hold: &RestoredHold, charged: u64, now: u64) -> InvocationRecord {
    let request_id = format!("{REQUEST_PREFIX}{}", hold.id.0);
    InvocationRecord {
        schema_type: SCHEMA_TYPE.into(),
        schema_version: SCHEMA_VERSION.into(),
        timestamp: timestamp(now),
        request_id: request_id.clone(),
        operation: UNKNOWN.into(),
        model_id: UNKNOWN.into(),
        input: Default::default(),
        output: Default::default(),
        request_metadata: Default::default(),
        tollgate: TollgateFields {
            request_id,
            tenant: hold.tenant.as_str().to_owned(),
            decision: "admit".into(),
            reason: format!(
                "in flight when its gateway stopped (hold {}, found open afterwards). Bedrock may have run the \
                 call, so it was charged its hold",
                hold.id
            ),
            requested_model_id: UNKNOWN.into(),
            reserved_nano_usd: hold.cost.get(),
            reservation: Some(hold.id.0),
            cost_nano_usd: charged,
            charged_from: "reservation".into(),
            // No answer was ever sent.
            status: 0,
            billing_note: Some("no usage: the gateway that forwarded the call stopped during it".into()),
            latency: Latency::default(),
            ..TollgateFields::default()
        },
    }
}

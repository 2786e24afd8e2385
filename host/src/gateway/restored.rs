//! Holds found open at startup: calls that were in flight when the gateway
//! last stopped (killed, crashed, its machine lost). Each was forwarded only
//! once its hold was durable, Bedrock may have run and billed it, and no
//! usage will ever come for it. So each is charged its hold, exactly once,
//! and logged like any call charged its hold: `reconcile` then matches.

use super::invocation_log::{InvocationRecord, Latency, SCHEMA_TYPE, SCHEMA_VERSION, TollgateFields, timestamp};
use super::settlement::{GatewayAccounting, Settlement};
use super::trace::now_ms;
use crate::ledger::{LedgerError, RestoredHold};

/// What a restored hold's record says of the call it covered, which the
/// ledger does not keep: only its tenant, hold and tokens survive.
const UNKNOWN: &str = "unknown";

/// Charges every restored hold and logs it; the number charged.
pub(super) async fn charge(accounting: &GatewayAccounting, settlement: &Settlement) -> usize {
    let now = now_ms();
    let mut charged = 0;
    for (hold, settled) in accounting.charge_restored(now) {
        let settled = match settled {
            Ok((settled, durable)) => durable.wait().await.map(|()| settled).map_err(LedgerError::from),
            Err(e) => Err(e),
        };
        match settled {
            Ok(settled) => {
                charged += 1;
                settlement.metrics.add_cost(hold.tenant.as_str(), settled.charged.get());
                tracing::warn!(
                    tenant = %hold.tenant,
                    reservation = %hold.id,
                    charged_nano_usd = settled.charged.get(),
                    "charged the hold of a call in flight when the gateway stopped"
                );
                settlement.begin();
                settlement.written(record(&hold, settled.charged.get(), now)).await;
            }
            Err(e) => tracing::error!(
                tenant = %hold.tenant,
                reservation = %hold.id,
                error = %e,
                "could not charge the hold of a call in flight when the gateway stopped; it stays held"
            ),
        }
    }
    charged
}

/// The record of a restored hold's charge, in the shape of every call's.
fn record(hold: &RestoredHold, charged: u64, now: u64) -> InvocationRecord {
    let request_id = format!("tollgate-restored-{}", hold.id.0);
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
                "in flight when the gateway stopped: its hold {} was found open at startup. Bedrock may have run \
                 the call, so it was charged its hold",
                hold.id
            ),
            requested_model_id: UNKNOWN.into(),
            reserved_nano_usd: hold.cost.get(),
            cost_nano_usd: charged,
            charged_from: "reservation".into(),
            // No answer was ever sent.
            status: 0,
            billing_note: Some("no usage: the gateway stopped during the call".into()),
            latency: Latency::default(),
            ..TollgateFields::default()
        },
    }
}

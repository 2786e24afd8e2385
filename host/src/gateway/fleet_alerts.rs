//! Alerts that are the fleet's, not one replica's: burn rates and forecasts
//! come from the spend series every replica writes into the shared ledger,
//! every replica assesses every tenant from them, and a webhook fires once
//! per level change, by whichever replica claims it first.

use std::pin::Pin;
use std::sync::Weak;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::directory::Directory;
use super::settlement::GatewayAccounting;
use super::trace::now_ms;
use crate::alerts::{AlertEvent, DeliveryGate};

/// How often each tenant's history is replaced by the fleet's.
const REFRESH: Duration = Duration::from_secs(2);

/// Every [`REFRESH`], replaces each tenant's spend history by the fleet's
/// series. Runs until the gateway's accounting is dropped.
pub(super) async fn follow_spend(accounting: Weak<GatewayAccounting>, directory: Weak<Directory>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(accounting), Some(directory)) = (accounting.upgrade(), directory.upgrade()) else {
            return;
        };
        let Some(remote) = accounting.ledger().remote() else {
            return;
        };
        let keep = accounting.alerts().series_keep();
        for tenant in directory.tenants() {
            let now = now_ms();
            match remote.spend_series(&tenant, now, keep).await {
                Ok(Some(series)) => {
                    accounting.alerts().replace_history(&tenant, &series, now);
                    // Assessed here too, so a replica that serves none of the
                    // tenant's calls still shows its level and the aggregate.
                    if let Ok(ledger) = accounting.ledger().snapshot_async(&tenant, now).await {
                        accounting
                            .alerts()
                            .assess(&tenant, now, ledger.spent, ledger.limit, ledger.period_end_ms);
                    }
                }
                Ok(None) => return,
                // Redis away: the local history goes on, and the next refresh catches up.
                Err(e) => {
                    tracing::debug!(tenant = %tenant, error = %e, "cannot read the fleet's spend series");
                    break;
                }
            }
        }
    }
}

/// Claims each level reached in Redis (`SET NX` for the hysteresis' hold
/// time): the first replica to claim it delivers it.
pub(super) struct ClaimGate {
    conn: ConnectionManager,
    prefix: String,
    hold: Duration,
}

impl ClaimGate {
    pub(super) fn new(url: &str, prefix: &str, timeout: Duration, hold: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(ClaimGate {
            conn,
            prefix: prefix.to_owned(),
            hold,
        })
    }
}

impl DeliveryGate for ClaimGate {
    fn claim(&self, event: &AlertEvent) -> Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
        let subject = event.tenant.as_ref().map_or("fleet", |t| t.as_str());
        // By the level reached, not the path: replicas that saw the spend at
        // different moments may jump green→red or go by orange; the
        // operator hears "red" once either way.
        let key = format!("{}:{{{subject}}}:alert:{:?}", self.prefix, event.to);
        let mut conn = self.conn.clone();
        let hold_ms = self.hold.as_millis().max(1) as u64;
        Box::pin(async move {
            let claimed: Result<Option<String>, redis::RedisError> = redis::cmd("SET")
                .arg(&key)
                .arg(now_ms())
                .arg("NX")
                .arg("PX")
                .arg(hold_ms)
                .query_async(&mut conn)
                .await;
            match claimed {
                Ok(answer) => {
                    tracing::info!(key = %key, claimed = answer.is_some(), "alert delivery claim");
                    answer.is_some()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim an alert in Redis; delivering it from this replica");
                    true
                }
            }
        })
    }
}

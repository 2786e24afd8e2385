//! The gateway's background duties, which every host of it must run: holds
//! never settled go back to their budgets once they expire, and holds the
//! store adopts from replicas that died are charged as they come. `app::start`
//! runs them; an embedder that assembles the gateway itself spawns
//! [`Gateway::upkeep`] once.

use std::sync::Arc;
use std::time::Duration;

use super::service::Gateway;
use super::trace::now_ms;

/// How often expired reservations are swept back.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(30);

impl Gateway {
    /// Runs until dropped: sweeps expired holds every [`EXPIRY_SWEEP`], and
    /// charges and logs each hold the store adopts from a replica whose lease
    /// lapsed. Spawn it once per gateway, after assembly.
    pub async fn upkeep(&self) {
        tokio::join!(self.sweep_expiries(), self.charge_adopted());
    }

    async fn sweep_expiries(&self) {
        let mut tick = tokio::time::interval(EXPIRY_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let accounting = Arc::clone(self.accounting());
            match tokio::task::spawn_blocking(move || accounting.expire(now_ms())).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::warn!(expired = n, "returned reservations that were never settled"),
                Ok(Err(e)) => tracing::error!(error = %e, "could not sweep expired reservations"),
                Err(e) => tracing::error!(error = %e, "the reservation sweeper failed"),
            }
        }
    }

    /// Returns at once for a store that finds restored holds only when it
    /// opens: those are charged before the first call, at assembly.
    async fn charge_adopted(&self) {
        let Some(signal) = self.accounting().ledger().store().restored_signal() else {
            return;
        };
        loop {
            let adopted = signal.notified();
            tokio::pin!(adopted);
            // Registered before the check, so holds adopted in between are not missed.
            adopted.as_mut().enable();
            self.charge_restored_holds().await;
            adopted.await;
        }
    }
}

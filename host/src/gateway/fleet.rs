//! Keeps a replica in step with its fleet: it listens on the control
//! store's channel and applies each announced change (a tenant's policy
//! versions, or its record: budget, limits, keys, a new tenant) from the
//! stored state. Pub/sub may lose messages while disconnected, so on every
//! (re)subscription it first reads the whole stored state, and the stored
//! state always wins over what a message said.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;

use super::directory::Directory;
use super::lifecycle::PolicyLifecycle;
use super::settlement::GatewayAccounting;
use crate::control::{Change, ControlStore, FleetControl};
use crate::ids::TenantId;

/// What a change is applied to.
pub(super) struct Replica {
    pub(super) control: Weak<FleetControl>,
    pub(super) lifecycle: Arc<PolicyLifecycle>,
    pub(super) directory: Arc<Directory>,
    pub(super) accounting: Arc<GatewayAccounting>,
}

/// Runs until the control store is dropped: subscribe, read everything,
/// then apply messages as they come; on a lost connection, start over.
pub(super) async fn follow(replica: Replica) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(control) = replica.control.upgrade() else {
            return;
        };
        let (client, channel) = (control.redis().client().clone(), control.redis().channel());
        drop(control);
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                pause = Duration::from_millis(100);
                // A replica started on its local copy reads Redis from now on.
                if let Some(control) = replica.control.upgrade() {
                    control.back_on_redis();
                }
                // Subscribed first, then read: a change made in between is heard as well.
                replica.sync_all().await;
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let Ok(text) = message.get_payload::<String>() else {
                        continue;
                    };
                    match Change::parse(&text) {
                        Some(change) => replica.apply(change).await,
                        None => tracing::debug!(message = %text, "ignored an unknown fleet message"),
                    }
                }
                tracing::warn!("lost the fleet's change channel; reconnecting");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the fleet's change channel; retrying");
            }
        }
        if replica.control.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

impl Replica {
    /// Reads every stored tenant and policy record; runs off the async workers.
    async fn sync_all(&self) {
        let Some(control) = self.control.upgrade() else { return };
        let tenants = match tokio::task::spawn_blocking(move || control.tenants()).await {
            Ok(Ok(tenants)) => tenants,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the fleet's tenants");
                return;
            }
            Err(_) => return,
        };
        let mut all: Vec<TenantId> = self.directory.tenants();
        for (tenant, _) in &tenants {
            if !all.contains(tenant) {
                all.push(tenant.clone());
            }
        }
        for tenant in all {
            self.apply(Change::Tenant(tenant.clone())).await;
            self.apply(Change::Policies(tenant)).await;
        }
    }

    async fn apply(&self, change: Change) {
        let Some(control) = self.control.upgrade() else { return };
        let lifecycle = Arc::clone(&self.lifecycle);
        let directory = Arc::clone(&self.directory);
        let accounting = Arc::clone(&self.accounting);
        let result = tokio::task::spawn_blocking(move || match &change {
            Change::Policies(tenant) => lifecycle
                .sync_policies(tenant)
                .map(|changed| changed.then(|| format!("tenant {tenant}'s policy versions"))),
            Change::Tenant(tenant) => {
                let Some(stored) = control.tenant(tenant).map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                if directory.record(tenant).as_ref() == Some(&stored) {
                    return Ok(None);
                }
                let limits = stored.limits;
                // Already kept: applied here only.
                directory
                    .update(tenant, |_| Ok(stored), |_| Ok(()))
                    .map_err(|e| e.to_string())?;
                accounting.ledger().set_limits(tenant, limits);
                // A tenant new to this replica may have policies already.
                lifecycle.sync_policies(tenant)?;
                Ok(Some(format!("tenant {tenant}")))
            }
        })
        .await;
        match result {
            Ok(Ok(Some(what))) => tracing::info!(what = %what, "applied a change made on another replica"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not apply a change made on another replica"),
            Err(e) => tracing::error!(error = %e, "applying a fleet change failed"),
        }
    }
}

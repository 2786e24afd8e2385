//! What the dashboard page draws, in one JSON document: every tenant's
//! budget, spend, holds, alert level, burn rates and forecast with its
//! recent usage, the aggregate level, recent alert events and policy versions.

use std::sync::Arc;

use serde::Serialize;

use super::super::{AdminState, TenantView, view};
use crate::alerts::AlertEvent;
use crate::gateway::trace::now_ms;
use crate::gateway::usage_series::TenantSeries;
use crate::money::NanoUsd;
use crate::upstream::error::BedrockError;

/// Users and use cases listed per tenant (the rest is "other").
const TOP: usize = 8;
/// Alert events and policy versions listed.
const RECENT: usize = 40;
/// The default and the longest chart window, minutes.
pub const DEFAULT_MINUTES: u64 = 60;
pub const MAX_MINUTES: u64 = crate::gateway::usage_series::RETENTION_MINUTES;

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Snapshot {
    pub now_ms: u64,
    /// The chart window, minutes back from now.
    pub minutes: u64,
    pub aggregate_alert: String,
    pub tenants: Vec<TenantPanel>,
    /// Newest first.
    pub alerts: Vec<Arc<AlertEvent>>,
    /// Newest first.
    pub policies: Vec<PolicyRow>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantPanel {
    #[serde(flatten)]
    pub view: TenantView,
    pub burn_rate_long: u64,
    pub baseline_burn_rate: u64,
    /// Version numbers in activation order, the last active.
    pub activations: Vec<u32>,
    pub series: TenantSeries,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyRow {
    pub tenant: String,
    pub version: String,
    pub source: String,
    pub created_at_ms: u64,
    pub active: bool,
    pub shadow: bool,
}

pub(super) async fn build(state: &AdminState, minutes: u64) -> Result<Snapshot, BedrockError> {
    let gateway = &state.gateway;
    let now = now_ms();
    let since = now.saturating_sub(minutes * 60_000);
    let alerts = gateway.accounting().alerts();
    let registry = gateway.registry();
    let mut tenants = Vec::new();
    let mut policies = Vec::new();
    for tenant in gateway.tenants() {
        let view = view(state, &tenant).await?;
        let indicators = alerts.indicators(&tenant, now, NanoUsd(view.spent_nano_usd), view.period_end_ms);
        let mut series = gateway.usage_series().tenant(tenant.as_str(), now, TOP);
        series.minutes.retain(|m| m.at_ms >= since);
        let snapshot = registry.snapshot(&tenant);
        let active = registry.active(&tenant).map(|v| v.id().number);
        let shadow = registry.shadow(&tenant).map(|s| s.version().id().number);
        for version in snapshot.as_ref().map(|s| s.versions.as_slice()).unwrap_or_default() {
            policies.push(PolicyRow {
                tenant: tenant.to_string(),
                version: version.id().to_string(),
                source: version.source().to_owned(),
                created_at_ms: version
                    .created_at()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                active: active == Some(version.id().number),
                shadow: shadow == Some(version.id().number),
            });
        }
        let activations = snapshot.map(|s| s.activations).unwrap_or_default();
        tenants.push(TenantPanel {
            view,
            burn_rate_long: indicators.burn_rate_long.get(),
            baseline_burn_rate: indicators.baseline_burn_rate.get(),
            activations: activations.iter().rev().take(RECENT).rev().copied().collect(),
            series,
        });
    }
    policies.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then(a.tenant.cmp(&b.tenant)));
    policies.truncate(RECENT);
    let mut events = alerts.sink().recent();
    events.reverse();
    events.truncate(RECENT);
    Ok(Snapshot {
        now_ms: now,
        minutes,
        aggregate_alert: format!("{:?}", alerts.aggregate_level()).to_lowercase(),
        tenants,
        alerts: events,
        policies,
    })
}

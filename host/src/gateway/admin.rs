//! The admin API, behind its own bearer token (never a tenant's key):
//!
//! * `GET  /admin/tenants`: every tenant's budget, spend, holds, alert level and policy version;
//! * `GET  /admin/tenants/{id}`: one tenant, the same fields (spend of this
//!   period and of every period kept);
//! * `/admin/tenants/{id}/policy...`: the policy lifecycle (upload, versions,
//!   activate, shadow, promote, rollback); see [`policies`];
//! * `/admin/dashboard...`: the live dashboard page; see [`dashboard`];
//! * `GET  /admin/idle`: answers once no call is in flight (every started
//!   call charged and logged), or 503 after 30 s; for draining and tests.
//!
//! Without a configured token the admin API answers 404: it does not exist.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::upstream::error::BedrockError;
use std::sync::Arc;

use super::service::Gateway;
use super::trace::now_ms;
use crate::ids::TenantId;

pub mod dashboard;
pub mod policies;
pub mod tenants;

/// The admin token, kept as its SHA-256.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Result<AdminToken, String> {
        if token.chars().count() < 16 {
            return Err("the admin token must have at least 16 characters".into());
        }
        Ok(AdminToken(Sha256::digest(token.as_bytes()).into()))
    }

    fn matches(&self, presented: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        hash.ct_eq(&self.0).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// What the admin handlers share: the gateway they operate and the token
/// that guards them (`None`: the admin API is off).
#[derive(Clone)]
struct AdminState {
    gateway: Gateway,
    token: Option<Arc<AdminToken>>,
    /// The dashboard's browser sessions.
    sessions: Arc<dashboard::Sessions>,
}

/// The admin API's routes, with their own state, to merge into a listener.
pub(crate) fn routes(gateway: Gateway, token: Option<AdminToken>, sessions: Arc<dashboard::Sessions>) -> Router {
    let state = AdminState {
        gateway,
        token: token.map(Arc::new),
        sessions,
    };
    Router::new()
        .route("/admin/tenants", get(list).post(tenants::create))
        .route("/admin/tenants/{tenant}", get(one).patch(tenants::update))
        .route("/admin/tenants/{tenant}/keys", get(tenants::keys))
        .route("/admin/tenants/{tenant}/api-keys", post(tenants::issue_api_key))
        .route(
            "/admin/tenants/{tenant}/api-keys/{id}",
            axum::routing::delete(tenants::revoke_api_key),
        )
        .route("/admin/tenants/{tenant}/access-keys", post(tenants::issue_access_key))
        .route(
            "/admin/tenants/{tenant}/access-keys/{id}",
            axum::routing::delete(tenants::revoke_access_key),
        )
        .route(
            "/admin/tenants/{tenant}/policy",
            get(policies::active).post(policies::upload),
        )
        .route("/admin/tenants/{tenant}/policy/versions", get(policies::versions))
        .route(
            "/admin/tenants/{tenant}/policy/settings",
            axum::routing::patch(policies::change_settings),
        )
        .route(
            "/admin/tenants/{tenant}/policy/versions/{number}/activate",
            post(policies::activate),
        )
        .route(
            "/admin/tenants/{tenant}/policy/shadow",
            get(policies::shadow_report)
                .put(policies::set_shadow)
                .delete(policies::clear_shadow),
        )
        .route("/admin/tenants/{tenant}/policy/promote", post(policies::promote))
        .route("/admin/tenants/{tenant}/policy/rollback", post(policies::rollback))
        // The first spelling of rollback, kept for scripts that use it.
        .route("/admin/tenants/{tenant}/rollback", post(policies::rollback))
        .route("/admin/idle", get(idle))
        .route("/admin/openapi.json", get(openapi))
        .route("/admin/policy-dir", get(policy_dir))
        .route("/admin/dashboard", get(dashboard::page))
        .route("/admin/dashboard/session", dashboard::session_routes())
        .route("/admin/dashboard/data", get(dashboard::data))
        .merge(dashboard::assets())
        .with_state(state)
}

/// The OpenAPI description of these routes; a test holds it to them.
const OPENAPI: &str = include_str!("../../../docs/admin-api.openapi.json");

async fn openapi(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(denied) = check(&state, &headers) {
        return denied.into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `GET /admin/policy-dir`: the watched directory and each file's last outcome.
/// `?after=N`: answer once the watcher has recorded more than N outcomes
/// (or after [`IDLE_WAIT`]), so a deploy script waits on its file.
#[derive(serde::Deserialize)]
struct AfterQuery {
    after: Option<u64>,
}

async fn policy_dir(
    State(state): State<AdminState>,
    axum::extract::Query(query): axum::extract::Query<AfterQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = check(&state, &headers) {
        return denied.into_response();
    }
    let watch = state.gateway.policy_watch();
    if let Some(seen) = query.after {
        let _ = tokio::time::timeout(IDLE_WAIT, watch.changed_after(seen)).await;
    }
    Json(serde_json::json!({
        "dir": watch.dir().map(|d| d.display().to_string()),
        "generation": watch.generation(),
        "files": watch.files(),
    }))
    .into_response()
}

/// Longest `/admin/idle` waits before answering 503.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn idle(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(denied) = check(&state, &headers) {
        return denied.into_response();
    }
    match tokio::time::timeout(IDLE_WAIT, state.gateway.idle()).await {
        Ok(()) => Json(serde_json::json!({ "in-flight": 0 })).into_response(),
        Err(_) => BedrockError::unavailable(format!(
            "{} calls still in flight after {} s",
            state.gateway.in_flight(),
            IDLE_WAIT.as_secs()
        ))
        .into_response(),
    }
}

/// A tenant as the admin API shows it. Money in nano-dollars.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantView {
    pub tenant: String,
    pub tier: String,
    /// Its calls are refused while set.
    pub disabled: bool,
    pub period: crate::ledger::Period,
    pub time_zone: String,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub included_tokens: u64,
    pub budget_nano_usd: u64,
    /// This period's spend.
    pub spent_nano_usd: u64,
    /// Spend over every period the ledger keeps, this one included: what
    /// `tollgate reconcile` holds the invocation log against.
    pub spent_all_periods_nano_usd: u64,
    /// Calls settled over those periods.
    pub calls_all_periods: u64,
    pub reserved_nano_usd: u64,
    pub open_reservations: usize,
    pub period_end_ms: u64,
    pub burn_rate_short: u64,
    pub forecast_spend: u64,
    pub alert: String,
    pub policy_version: Option<String>,
}

fn check(state: &AdminState, headers: &HeaderMap) -> Result<(), BedrockError> {
    let Some(token) = &state.token else {
        return Err(BedrockError::new(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "the admin API is off: set admin-token in tollgate.toml or TOLLGATE_ADMIN_TOKEN",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.matches(presented.trim()) {
        Ok(())
    } else {
        Err(BedrockError::new(
            StatusCode::UNAUTHORIZED,
            "UnrecognizedClientException",
            "the admin API needs `Authorization: Bearer <admin token>`; the token is set by admin-token in \
             tollgate.toml or TOLLGATE_ADMIN_TOKEN",
        ))
    }
}

/// A tenant's view; read off the async workers when the ledger is across a network.
async fn view(state: &AdminState, tenant: &TenantId) -> Result<TenantView, BedrockError> {
    if state.gateway.accounting().ledger().remote().is_none() {
        return view_now(state, tenant);
    }
    let (state, tenant) = (state.clone(), tenant.clone());
    tokio::task::spawn_blocking(move || view_now(&state, &tenant))
        .await
        .map_err(|e| BedrockError::internal(e.to_string()))?
}

fn view_now(state: &AdminState, tenant: &TenantId) -> Result<TenantView, BedrockError> {
    let profile = state.gateway.profile(tenant).ok_or_else(|| unknown(tenant))?;
    let tenant_state = state
        .gateway
        .accounting()
        .tenant_state(tenant, &profile.tier, now_ms())
        .map_err(|e| super::refusal::ledger_unreadable(tenant, e))?;
    let ledger = state.gateway.accounting().ledger();
    let open = ledger
        .snapshot(tenant, now_ms())
        .map(|s| s.open_reservations)
        .unwrap_or_default();
    let history = ledger
        .history(tenant)
        .map_err(|e| super::refusal::ledger_unreadable(tenant, e))?;
    let limits = ledger.limits(tenant).ok_or_else(|| unknown(tenant))?;
    Ok(TenantView {
        tenant: tenant.to_string(),
        tier: profile.tier.clone(),
        disabled: profile.disabled,
        period: limits.period,
        time_zone: limits.time_zone.name().to_owned(),
        rpm: limits.rpm,
        tpm: limits.tpm,
        included_tokens: limits.included_tokens,
        budget_nano_usd: tenant_state.budget.limit,
        spent_nano_usd: tenant_state.budget.spent,
        spent_all_periods_nano_usd: history.iter().map(|p| p.spent.get()).fold(0, u64::saturating_add),
        calls_all_periods: history.iter().map(|p| p.calls).sum(),
        reserved_nano_usd: tenant_state.budget.reserved,
        open_reservations: open,
        period_end_ms: tenant_state.budget.period_end_ms,
        burn_rate_short: tenant_state.indicators.burn_rate_short,
        forecast_spend: tenant_state.indicators.forecast_spend,
        alert: format!("{:?}", tenant_state.alert).to_lowercase(),
        policy_version: state.gateway.registry().active(tenant).map(|v| v.id().to_string()),
    })
}

fn unknown(tenant: &TenantId) -> BedrockError {
    BedrockError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        format!("no tenant {tenant} in this gateway"),
    )
}

fn parse_tenant(id: &str) -> Result<TenantId, BedrockError> {
    TenantId::new(id).map_err(|e| BedrockError::validation(e.to_string()))
}

async fn list(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(denied) = check(&state, &headers) {
        return denied.into_response();
    }
    let tenants = state.gateway.tenants();
    let mut views = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        match view(&state, tenant).await {
            Ok(v) => views.push(v),
            Err(e) => return e.into_response(),
        }
    }
    Json(views).into_response()
}

async fn one(State(state): State<AdminState>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    if let Err(denied) = check(&state, &headers) {
        return denied.into_response();
    }
    let tenant = match parse_tenant(&tenant) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    match view(&state, &tenant).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_by_hash_and_short_ones_refused() {
        assert!(AdminToken::new("short").is_err());
        let token = AdminToken::new("a-long-enough-admin-token").expect("ok");
        assert!(token.matches("a-long-enough-admin-token"));
        assert!(!token.matches("a-long-enough-admin-tokeN"));
        assert!(!format!("{token:?}").contains("long"));
    }
}

//! Tenants and their keys through the admin API, at runtime:
//!
//! * `POST   /admin/tenants`: create a tenant (no keys, no policy yet);
//! * `PATCH  /admin/tenants/{tenant}`: change its plan, budget, period,
//!   time zone, limits, included tokens, or disable and enable it;
//! * `GET    /admin/tenants/{tenant}/keys`: its keys, by id (no secret);
//! * `POST   /admin/tenants/{tenant}/api-keys`: issue a bearer key, shown once;
//! * `DELETE /admin/tenants/{tenant}/api-keys/{id}`: revoke one;
//! * `POST   /admin/tenants/{tenant}/access-keys`: issue a SigV4 access key,
//!   its secret shown once;
//! * `DELETE /admin/tenants/{tenant}/access-keys/{id}`: revoke one.
//!
//! A change is saved in the control store before it applies, and applies
//! to the next call. Bodies are JSON; an error names the field.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono_tz::Tz;
use http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::{AdminState, check, parse_tenant, unknown, view};
use crate::config::Usd;
use crate::control::{AccessKeyRecord, ApiKeyRecord, TenantRecord};
use crate::gateway::directory::DirectoryError;
use crate::gateway::trace::now_ms;
use crate::ids::TenantId;
use crate::ledger::{Period, TenantLimits};
use crate::upstream::error::BedrockError;

/// Largest JSON body of these routes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// `POST /admin/tenants`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NewTenant {
    pub tenant: String,
    #[serde(default)]
    pub tier: String,
    pub budget_usd: Usd,
    #[serde(default)]
    pub period: Period,
    #[serde(default = "utc")]
    pub time_zone: Tz,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    #[serde(default)]
    pub included_tokens: u64,
}

/// `PATCH /admin/tenants/{tenant}`: only the fields given change; `null`
/// clears a limit.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TenantChange {
    pub tier: Option<String>,
    pub budget_usd: Option<Usd>,
    pub period: Option<Period>,
    pub time_zone: Option<Tz>,
    #[serde(default, deserialize_with = "some")]
    pub rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "some")]
    pub tpm: Option<Option<u64>>,
    pub included_tokens: Option<u64>,
    pub disabled: Option<bool>,
    pub allow_costlier_downgrade: Option<bool>,
}

/// A field given as `null` is `Some(None)`, told apart from one left out.
fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

fn utc() -> Tz {
    Tz::UTC
}

/// A key as listed: never its secret.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeyList {
    pub api_keys: Vec<ListedKey>,
    pub access_keys: Vec<ListedKey>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ListedKey {
    pub id: String,
    pub created_at_ms: u64,
}

/// A key as issued: the only time its secret is shown.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IssuedKey {
    pub tenant: String,
    pub id: String,
    /// The bearer key (`api-keys`) or the secret access key (`access-keys`).
    pub secret: String,
}

/// Reads a bounded JSON body after the token was checked.
async fn json_body<T: DeserializeOwned>(body: Body) -> Result<T, BedrockError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        BedrockError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationException",
            format!("the body may be at most {MAX_BODY_BYTES} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| BedrockError::validation(format!("body: {e}")))
}

fn refused(error: DirectoryError) -> BedrockError {
    match error {
        // Nothing changed: the store did not take it, so a retry later is safe.
        DirectoryError::NotKept(_) => BedrockError::unavailable(error.to_string()),
        DirectoryError::Refused(message) if message.starts_with("no tenant") => {
            BedrockError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
        }
        DirectoryError::Refused(message) if message.starts_with("tenant") && message.contains("exists") => {
            BedrockError::new(StatusCode::CONFLICT, "ConflictException", message)
        }
        other => BedrockError::validation(other.to_string()),
    }
}

/// Applies a change to one tenant: saved first, then live, then its limits
/// reach the ledger.
fn apply(
    state: &AdminState,
    tenant: &TenantId,
    change: impl FnOnce(Option<&TenantRecord>) -> Result<TenantRecord, String>,
) -> Result<TenantRecord, BedrockError> {
    let lifecycle = state.gateway.lifecycle();
    let record = state
        .gateway
        .directory()
        .update(tenant, change, |record| lifecycle.keep_tenant(tenant, record))
        .map_err(refused)?;
    state.gateway.accounting().ledger().set_limits(tenant, record.limits);
    Ok(record)
}

fn existing<'a>(tenant: &TenantId, record: Option<&'a TenantRecord>) -> Result<&'a TenantRecord, String> {
    record.ok_or_else(|| format!("no tenant {tenant} in this gateway; create it first (POST /admin/tenants)"))
}

fn respond<T: Serialize>(status: StatusCode, result: Result<T, BedrockError>) -> Response {
    match result {
        Ok(body) => (status, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /admin/tenants`.
pub(super) async fn create(State(state): State<AdminState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        check(&state, &headers)?;
        let new: NewTenant = json_body(body).await?;
        let tenant = TenantId::new(&new.tenant).map_err(|e| BedrockError::validation(format!("tenant: {e}")))?;
        let limits = TenantLimits {
            budget: new.budget_usd.0,
            period: new.period,
            time_zone: new.time_zone,
            rpm: new.rpm,
            tpm: new.tpm,
            included_tokens: new.included_tokens,
        };
        apply(&state, &tenant, |record| match record {
            Some(_) => Err(format!(
                "tenant {tenant} exists already; change it with PATCH /admin/tenants/{tenant}"
            )),
            None => Ok(TenantRecord::new(new.tier, limits)),
        })?;
        tracing::info!(tenant = %tenant, "created a tenant through the admin API");
        view(&state, &tenant).await
    }
    .await;
    respond(StatusCode::CREATED, result)
}

/// `PATCH /admin/tenants/{tenant}`.
pub(super) async fn update(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        check(&state, &headers)?;
        let tenant = parse_tenant(&tenant)?;
        let change: TenantChange = json_body(body).await?;
        apply(&state, &tenant, |record| {
            let mut next = existing(&tenant, record)?.clone();
            let limits = &mut next.limits;
            if let Some(budget) = change.budget_usd {
                limits.budget = budget.0;
            }
            if let Some(period) = change.period {
                limits.period = period;
            }
            if let Some(time_zone) = change.time_zone {
                limits.time_zone = time_zone;
            }
            if let Some(rpm) = change.rpm {
                limits.rpm = rpm;
            }
            if let Some(tpm) = change.tpm {
                limits.tpm = tpm;
            }
            if let Some(included) = change.included_tokens {
                limits.included_tokens = included;
            }
            if let Some(tier) = change.tier {
                next.tier = tier;
            }
            if let Some(disabled) = change.disabled {
                next.disabled = disabled;
            }
            if let Some(allow) = change.allow_costlier_downgrade {
                next.allow_costlier_downgrade = allow;
            }
            Ok(next)
        })?;
        tracing::info!(tenant = %tenant, "changed a tenant through the admin API");
        view(&state, &tenant).await
    }
    .await;
    respond(StatusCode::OK, result)
}

/// `GET /admin/tenants/{tenant}/keys`.
pub(super) async fn keys(State(state): State<AdminState>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    let result = (|| {
        check(&state, &headers)?;
        let tenant = parse_tenant(&tenant)?;
        let record = state
            .gateway
            .directory()
            .record(&tenant)
            .ok_or_else(|| unknown(&tenant))?;
        Ok(KeyList {
            api_keys: record
                .api_keys
                .iter()
                .map(|k| ListedKey {
                    id: k.id.clone(),
                    created_at_ms: k.created_at_ms,
                })
                .collect(),
            access_keys: record
                .access_keys
                .iter()
                .map(|k| ListedKey {
                    id: k.access_key_id.clone(),
                    created_at_ms: k.created_at_ms,
                })
                .collect(),
        })
    })();
    respond(StatusCode::OK, result)
}

/// `POST /admin/tenants/{tenant}/api-keys`: a new bearer key, shown once.
pub(super) async fn issue_api_key(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        check(&state, &headers)?;
        let tenant = parse_tenant(&tenant)?;
        let key = format!("tg_{}", random_hex(24)?);
        let issued = ApiKeyRecord::from_plaintext(&key, now_ms());
        let id = issued.id.clone();
        apply(&state, &tenant, |record| {
            let mut next = existing(&tenant, record)?.clone();
            next.api_keys.push(issued);
            Ok(next)
        })?;
        tracing::info!(tenant = %tenant, key = %id, "issued a bearer key");
        Ok(IssuedKey {
            tenant: tenant.to_string(),
            id,
            secret: key,
        })
    })();
    respond(StatusCode::CREATED, result)
}

/// `POST /admin/tenants/{tenant}/access-keys`: a new SigV4 key pair, its secret shown once.
pub(super) async fn issue_access_key(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        check(&state, &headers)?;
        let tenant = parse_tenant(&tenant)?;
        let id = format!("TG{}", random_hex(9)?.to_uppercase());
        let secret = random_hex(20)?;
        let issued = AccessKeyRecord {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            created_at_ms: now_ms(),
        };
        apply(&state, &tenant, |record| {
            let mut next = existing(&tenant, record)?.clone();
            next.access_keys.push(issued);
            Ok(next)
        })?;
        tracing::info!(tenant = %tenant, access_key_id = %id, "issued an access key");
        Ok(IssuedKey {
            tenant: tenant.to_string(),
            id,
            secret,
        })
    })();
    respond(StatusCode::CREATED, result)
}

/// `DELETE /admin/tenants/{tenant}/api-keys/{id}` and `.../access-keys/{id}`.
pub(super) async fn revoke_api_key(
    State(state): State<AdminState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    revoke(&state, &tenant, &id, &headers, |record, id| {
        let before = record.api_keys.len();
        record.api_keys.retain(|k| k.id != id);
        record.api_keys.len() < before
    })
}

pub(super) async fn revoke_access_key(
    State(state): State<AdminState>,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    revoke(&state, &tenant, &id, &headers, |record, id| {
        let before = record.access_keys.len();
        record.access_keys.retain(|k| k.access_key_id != id);
        record.access_keys.len() < before
    })
}

fn revoke(
    state: &AdminState,
    tenant: &str,
    id: &str,
    headers: &HeaderMap,
    remove: impl FnOnce(&mut TenantRecord, &str) -> bool,
) -> Response {
    let result = (|| {
        check(state, headers)?;
        let tenant = parse_tenant(tenant)?;
        apply(state, &tenant, |record| {
            let mut next = existing(&tenant, record)?.clone();
            if !remove(&mut next, id) {
                return Err(format!(
                    "no tenant {tenant} key {} to revoke; list them with GET /admin/tenants/{tenant}/keys",
                    crate::text::clip(id, 64)
                ));
            }
            Ok(next)
        })?;
        tracing::info!(tenant = %tenant, key = %crate::text::clip(id, 64), "revoked a key");
        Ok(serde_json::json!({ "revoked": id }))
    })();
    respond(StatusCode::OK, result)
}

/// Hex of `bytes` random bytes from the operating system.
fn random_hex(bytes: usize) -> Result<String, BedrockError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| BedrockError::internal(format!("no randomness for a new key: {e}")))?;
    Ok(hex::encode(buf))
}

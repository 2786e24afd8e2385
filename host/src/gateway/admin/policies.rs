//! A tenant's policy lifecycle through the admin API: upload (its cases must
//! pass), list versions, activate one, shadow a candidate, promote it, roll
//! back. Every route sits under `/admin/tenants/{tenant}/policy`.
//!
//! A component is sent as the raw body (`application/wasm`), or as
//! `multipart/form-data` with a `component` part and an optional `cases`
//! part (a cases file's TOML). Without a `cases` part, the tenant's
//! configured `policy-cases` apply. Who asked is taken from the
//! `x-tollgate-actor` header and kept with the version.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::{AdminState, check, parse_tenant, unknown};
use crate::gateway::lifecycle::Changing;
use crate::ids::TenantId;
use crate::registry::cases::CasesFile;
use crate::registry::version::{PolicySettings, PolicyVersion};
use crate::registry::{Candidate, RegistryError, ShadowReport};
use crate::upstream::error::BedrockError;

/// Largest policy component the admin API accepts.
pub(super) const MAX_POLICY_BYTES: usize = 64 * 1024 * 1024;
/// Largest cases file, and room for the multipart framing.
const MAX_CASES_BYTES: usize = 1024 * 1024;
/// The header naming who asked for a change, kept with the version.
pub const ACTOR_HEADER: &str = "x-tollgate-actor";

/// One kept version, as the admin API lists it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VersionView {
    pub version: String,
    pub number: u32,
    /// First 12 hex digits of the component's SHA-256.
    pub digest: String,
    /// The contract version the component targets, e.g. "0.2.0".
    #[serde(default)]
    pub contract: String,
    /// Where it came from and who asked: a file path, `admin upload by ...`.
    pub source: String,
    pub created_at_ms: u64,
    pub active: bool,
    pub shadow: bool,
    /// Its recent decisions used half its deadline in CPU, so it decides at
    /// the lowest priority until 64 quick ones in a row.
    #[serde(default)]
    pub heavy: bool,
    pub settings: PolicySettings,
}

/// What a lifecycle call did.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Changed {
    /// The version now active (after an upload, activation, promotion or rollback).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub activated: Option<String>,
    /// The version now shadowing, or that stopped shadowing.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shadow: Option<String>,
}

fn view(version: &PolicyVersion, active: u32, shadow: Option<u32>) -> VersionView {
    let number = version.id().number;
    VersionView {
        version: version.id().to_string(),
        number,
        digest: version.id().digest.to_string(),
        contract: version.component().contract().as_str().to_owned(),
        source: version.source().to_owned(),
        created_at_ms: version
            .created_at()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        active: number == active,
        shadow: shadow == Some(number),
        heavy: version.is_heavy(),
        settings: version.settings().clone(),
    }
}

/// A registry refusal with the status that says what kind it is.
fn refused(error: RegistryError) -> BedrockError {
    let message = error.to_string();
    match error {
        RegistryError::UnknownTenant(_) | RegistryError::UnknownVersion { .. } => {
            BedrockError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
        }
        RegistryError::Superseded { .. } | RegistryError::NoPreviousVersion(_) | RegistryError::NoShadow(_) => {
            BedrockError::new(StatusCode::CONFLICT, "ConflictException", message)
        }
        RegistryError::Load { .. } | RegistryError::Version { .. } | RegistryError::CasesFailed { .. } => {
            BedrockError::validation(message)
        }
    }
}

fn known(state: &AdminState, tenant: &str) -> Result<TenantId, BedrockError> {
    let tenant = parse_tenant(tenant)?;
    if state.gateway.profile(&tenant).is_none() {
        return Err(unknown(&tenant));
    }
    Ok(tenant)
}

fn respond(result: Result<impl Serialize, BedrockError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /admin/tenants/{tenant}/policy`: the active version, its settings
/// (the policy's config included) and the shadow, if any.
pub(super) async fn active(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        check(&state, &headers)?;
        let tenant = known(&state, &tenant)?;
        let registry = state.gateway.registry();
        let active = registry.active(&tenant).ok_or_else(|| no_policy(&tenant))?;
        let shadow = registry.shadow(&tenant).map(|s| s.version().id().number);
        Ok(view(&active, active.id().number, shadow))
    })())
}

/// `GET /admin/tenants/{tenant}/policy/versions`: the kept versions, oldest first.
pub(super) async fn versions(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond((|| {
        check(&state, &headers)?;
        let tenant = known(&state, &tenant)?;
        let registry = state.gateway.registry();
        let active = registry.active(&tenant).map_or(0, |v| v.id().number);
        let shadow = registry.shadow(&tenant).map(|s| s.version().id().number);
        Ok(registry
            .versions(&tenant)
            .iter()
            .map(|v| view(v, active, shadow))
            .collect::<Vec<_>>())
    })())
}

/// `POST /admin/tenants/{tenant}/policy`: a new version, compiled and
/// checked off the request path, activated once its cases pass.
pub(super) async fn upload(State(state): State<AdminState>, Path(tenant): Path<String>, request: Request) -> Response {
    respond(
        async {
            let (tenant, upload) = read_upload(&state, &tenant, request).await?;
            let wasm = upload.wasm.clone();
            let staged = stage(&state, &tenant, upload).await?;
            keep(&state, wasm).await?;
            let _changing = begin(&state, &tenant).await?;
            let id = state.gateway.registry().activate_staged(staged).map_err(refused)?;
            tracing::info!(tenant = %tenant, version = %id, "activated a policy version uploaded through the admin API");
            let changed = Changed {
                activated: Some(id.to_string()),
                shadow: None,
            };
            saved(&state, &tenant, changed).await
        }
        .await,
    )
}

/// `?version=N`: a kept version instead of a new component.
#[derive(Debug, Deserialize)]
pub(super) struct VersionQuery {
    version: Option<u32>,
}

/// `PUT /admin/tenants/{tenant}/policy/shadow`: a candidate (a new
/// component, or `?version=N` of the kept ones) decides beside the active
/// version from the next call on, in place of any earlier shadow.
pub(super) async fn set_shadow(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    Query(query): Query<VersionQuery>,
    request: Request,
) -> Response {
    respond(
        async {
            let (tenant, id, _changing) = if let Some(number) = query.version {
                check(&state, request.headers())?;
                let tenant = known(&state, &tenant)?;
                let changing = begin(&state, &tenant).await?;
                let id = off_the_workers(&state, &tenant, move |registry, tenant| {
                    registry.shadow_version(tenant, number)
                })
                .await?;
                (tenant, id, changing)
            } else {
                let (tenant, upload) = read_upload(&state, &tenant, request).await?;
                keep(&state, upload.wasm.clone()).await?;
                let registry = Arc::clone(state.gateway.registry());
                let settings = current_settings(&state, &tenant);
                let task_tenant = tenant.clone();
                let changing = begin(&state, &tenant).await?;
                let id = tokio::task::spawn_blocking(move || {
                    let cases = upload.cases.as_deref();
                    registry.set_shadow(&task_tenant, &upload.wasm, settings, &upload.source, cases)
                })
                .await
                .map_err(|e| BedrockError::internal(e.to_string()))?
                .map_err(refused)?;
                (tenant, id, changing)
            };
            tracing::info!(version = %id, "a policy version now shadows its tenant's active one");
            let changed = Changed {
                activated: None,
                shadow: Some(id.to_string()),
            };
            saved(&state, &tenant, changed).await
        }
        .await,
    )
}

/// `GET /admin/tenants/{tenant}/policy/shadow`: how often the shadow
/// disagreed, on what, and what it would have changed in money.
pub(super) async fn shadow_report(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond((|| -> Result<ShadowReport, BedrockError> {
        check(&state, &headers)?;
        let tenant = known(&state, &tenant)?;
        let shadow = state
            .gateway
            .registry()
            .shadow(&tenant)
            .ok_or_else(|| refused(RegistryError::NoShadow(tenant.clone())))?;
        Ok(shadow.report())
    })())
}

/// `DELETE /admin/tenants/{tenant}/policy/shadow`: stops shadowing.
pub(super) async fn clear_shadow(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            check(&state, &headers)?;
            let tenant = known(&state, &tenant)?;
            let _changing = begin(&state, &tenant).await?;
            let id = state.gateway.registry().clear_shadow(&tenant).map_err(refused)?;
            let changed = Changed {
                activated: None,
                shadow: Some(id.to_string()),
            };
            saved(&state, &tenant, changed).await
        }
        .await,
    )
}

/// `POST /admin/tenants/{tenant}/policy/promote`: the shadow becomes active.
pub(super) async fn promote(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    lifecycle(&state, &tenant, &headers, |registry, tenant| registry.promote(tenant)).await
}

/// `POST /admin/tenants/{tenant}/policy/rollback`: back to the previous version.
pub(super) async fn rollback(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    lifecycle(&state, &tenant, &headers, |registry, tenant| registry.rollback(tenant)).await
}

/// `POST /admin/tenants/{tenant}/policy/versions/{number}/activate`.
pub(super) async fn activate(
    State(state): State<AdminState>,
    Path((tenant, number)): Path<(String, u32)>,
    headers: HeaderMap,
) -> Response {
    lifecycle(&state, &tenant, &headers, move |registry, tenant| {
        registry.activate(tenant, number)
    })
    .await
}

async fn lifecycle(
    state: &AdminState,
    tenant: &str,
    headers: &HeaderMap,
    change: impl FnOnce(&crate::registry::Registry, &TenantId) -> Result<crate::ids::PolicyVersionId, RegistryError>
    + Send
    + 'static,
) -> Response {
    respond(
        async {
            check(state, headers)?;
            let tenant = known(state, tenant)?;
            let _changing = begin(state, &tenant).await?;
            let id = off_the_workers(state, &tenant, change).await?;
            tracing::info!(tenant = %tenant, version = %id, actor = actor(headers), "activated a policy version");
            let changed = Changed {
                activated: Some(id.to_string()),
                shadow: None,
            };
            saved(state, &tenant, changed).await
        }
        .await,
    )
}

/// Runs a change on a blocking thread: a version made active or the shadow
/// again creates its first instance, milliseconds for an interpreter.
async fn off_the_workers(
    state: &AdminState,
    tenant: &TenantId,
    change: impl FnOnce(&crate::registry::Registry, &TenantId) -> Result<crate::ids::PolicyVersionId, RegistryError>
    + Send
    + 'static,
) -> Result<crate::ids::PolicyVersionId, BedrockError> {
    let registry = Arc::clone(state.gateway.registry());
    let tenant = tenant.clone();
    tokio::task::spawn_blocking(move || change(&registry, &tenant))
        .await
        .map_err(|e| BedrockError::internal(e.to_string()))?
        .map_err(refused)
}

/// A change of the tenant's policies begins here: only if the control
/// store can keep it now, so a store that does not answer refuses the
/// change before it takes effect rather than leaving it in effect unsaved.
async fn begin(state: &AdminState, tenant: &TenantId) -> Result<Changing, BedrockError> {
    let lifecycle = Arc::clone(state.gateway.lifecycle());
    tokio::task::spawn_blocking(move || lifecycle.check_writable())
        .await
        .map_err(|e| BedrockError::internal(e.to_string()))?
        .map_err(|e| BedrockError::unavailable(format!("nothing changed: {e}")))?;
    Ok(state.gateway.lifecycle().changing(tenant))
}

/// Keeps an uploaded component's bytes before any version naming it is
/// active or shadowing, so a restart can always rebuild it.
async fn keep(state: &AdminState, wasm: Bytes) -> Result<(), BedrockError> {
    let lifecycle = Arc::clone(state.gateway.lifecycle());
    tokio::task::spawn_blocking(move || lifecycle.keep_component(&wasm))
        .await
        .map_err(|e| BedrockError::internal(e.to_string()))?
        .map_err(|e| BedrockError::unavailable(format!("the component could not be stored, so nothing changed: {e}")))
}

/// Writes the tenant's new state to the control store. The change is in
/// effect already; a failure says a restart would not keep it.
async fn saved(state: &AdminState, tenant: &TenantId, changed: Changed) -> Result<Changed, BedrockError> {
    let lifecycle = Arc::clone(state.gateway.lifecycle());
    let task_tenant = tenant.clone();
    let result = tokio::task::spawn_blocking(move || lifecycle.save(&task_tenant))
        .await
        .map_err(|e| BedrockError::internal(e.to_string()))?;
    if let Err(e) = &result
        && e.message.contains("CONFLICT")
    {
        // Another replica saved first: this one takes the stored state back, and the caller retries.
        let lifecycle = Arc::clone(state.gateway.lifecycle());
        let task_tenant = tenant.clone();
        let undone = tokio::task::spawn_blocking(move || lifecycle.take_stored(&task_tenant)).await;
        tracing::warn!(tenant = %tenant, error = %e, undone = ?undone, "a policy change raced one on another replica");
        return Err(BedrockError::new(
            StatusCode::CONFLICT,
            "ConflictException",
            format!(
                "another replica changed tenant {tenant}'s policies at the same time ({e}); this change was undone \
                 and the other one kept: look at the versions and retry"
            ),
        ));
    }
    result.map(|()| changed).map_err(|e| {
        tracing::error!(tenant = %tenant, error = %e, "a policy change is in effect but was not saved");
        BedrockError::internal(format!(
            "the change is in effect but could not be saved, so a restart would undo it: {e}"
        ))
    })
}

fn no_policy(tenant: &TenantId) -> BedrockError {
    BedrockError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        format!("tenant {tenant} has no policy yet; upload one"),
    )
}

/// A component and its cases, as uploaded.
struct Upload {
    wasm: Bytes,
    cases: Option<Arc<CasesFile>>,
    source: String,
}

/// Who asked, from [`ACTOR_HEADER`], printable and bounded.
fn actor(headers: &HeaderMap) -> String {
    let named = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .unwrap_or("admin");
    crate::text::escape_controls(&crate::text::clip(named, 128)).into_owned()
}

/// The running version's settings (config, limits, failure mode), which a
/// new version keeps.
fn current_settings(state: &AdminState, tenant: &TenantId) -> PolicySettings {
    state
        .gateway
        .registry()
        .active(tenant)
        .map_or_else(PolicySettings::default, |v| v.settings().clone())
}

/// Checks the token before a byte of the body is read, then reads a bounded
/// body: a raw component, or a multipart one with its cases.
async fn read_upload(state: &AdminState, tenant: &str, request: Request) -> Result<(TenantId, Upload), BedrockError> {
    check(state, request.headers())?;
    let tenant = known(state, tenant)?;
    let source = format!("admin upload by {}", actor(request.headers()));
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (parts, body) = request.into_parts();
    let too_large = || {
        BedrockError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationException",
            format!("a policy component may be at most {MAX_POLICY_BYTES} bytes"),
        )
    };
    let bytes = axum::body::to_bytes(body, MAX_POLICY_BYTES + MAX_CASES_BYTES)
        .await
        .map_err(|_| too_large())?;
    if !multipart {
        if bytes.len() > MAX_POLICY_BYTES {
            return Err(too_large());
        }
        let cases = state.gateway.profile(&tenant).and_then(|p| p.policy_cases.clone());
        return Ok((
            tenant,
            Upload {
                wasm: bytes,
                cases,
                source,
            },
        ));
    }
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| BedrockError::validation(format!("the multipart body cannot be read: {e}")))?;
    let (mut wasm, mut cases) = (None, None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| BedrockError::validation(format!("the multipart body cannot be read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let data = field
            .bytes()
            .await
            .map_err(|e| BedrockError::validation(format!("part `{name}` cannot be read: {e}")))?;
        match name.as_str() {
            "component" => wasm = Some(data),
            "cases" => {
                let text = std::str::from_utf8(&data)
                    .map_err(|_| BedrockError::validation("part `cases` must be a cases file's TOML text (UTF-8)"))?;
                let parsed =
                    CasesFile::parse(text, "part `cases`").map_err(|e| BedrockError::validation(e.to_string()))?;
                cases = Some(Arc::new(parsed));
            }
            other => {
                return Err(BedrockError::validation(format!(
                    "unknown part `{}`: send `component` (the .wasm) and, optionally, `cases` (TOML)",
                    crate::text::clip(other, 64)
                )));
            }
        }
    }
    let wasm = wasm.ok_or_else(|| {
        BedrockError::validation("the multipart body has no `component` part: send the policy's .wasm in it")
    })?;
    if wasm.len() > MAX_POLICY_BYTES {
        return Err(too_large());
    }
    let cases = cases.or_else(|| state.gateway.profile(&tenant).and_then(|p| p.policy_cases.clone()));
    Ok((tenant, Upload { wasm, cases, source }))
}

/// Compiles and checks an upload off the async workers, keeping the running
/// version's settings.
async fn stage(state: &AdminState, tenant: &TenantId, upload: Upload) -> Result<crate::registry::Staged, BedrockError> {
    let registry = Arc::clone(state.gateway.registry());
    let settings = current_settings(state, tenant);
    let tenant = tenant.clone();
    tokio::task::spawn_blocking(move || {
        registry.stage(
            &tenant,
            Candidate::Wasm(&upload.wasm),
            settings,
            &upload.source,
            upload.cases.as_deref(),
        )
    })
    .await
    .map_err(|e| BedrockError::internal(e.to_string()))?
    .map_err(refused)
}

/// `PATCH /admin/tenants/{tenant}/policy/settings`: only the fields given change.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct SettingsChange {
    /// The policy's parameters, as the JSON object it receives.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    pub failure_mode: Option<crate::registry::decision::FailureMode>,
    pub deadline_ms: Option<u64>,
    pub memory_limit_mib: Option<u32>,
    pub instances: Option<crate::engine::instances::InstanceStrategy>,
    pub downgrade_chain: Option<Vec<String>>,
}

/// `PATCH /admin/tenants/{tenant}/policy/settings`: the active component
/// with new settings becomes a new version, checked as an upload is (its
/// `validate-config` and cases), then activated.
pub(super) async fn change_settings(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    respond(
        async {
            check(&state, &headers)?;
            let tenant = known(&state, &tenant)?;
            let bytes = axum::body::to_bytes(body, MAX_CASES_BYTES)
                .await
                .map_err(|_| BedrockError::validation(format!("the body may be at most {MAX_CASES_BYTES} bytes")))?;
            let change: SettingsChange =
                serde_json::from_slice(&bytes).map_err(|e| BedrockError::validation(format!("body: {e}")))?;
            let active = state
                .gateway
                .registry()
                .active(&tenant)
                .ok_or_else(|| no_policy(&tenant))?;
            let mut settings = active.settings().clone();
            if let Some(config) = change.config {
                settings.config = serde_json::Value::Object(config).to_string();
            }
            if let Some(mode) = change.failure_mode {
                settings.failure_mode = mode;
            }
            if let Some(deadline) = change.deadline_ms {
                settings.deadline_ms = deadline;
            }
            if let Some(memory) = change.memory_limit_mib {
                settings.memory_limit_mib = memory;
            }
            if let Some(instances) = change.instances {
                settings.instances = instances;
            }
            if let Some(chain) = change.downgrade_chain {
                settings.downgrade_chain = chain;
            }
            let registry = Arc::clone(state.gateway.registry());
            let cases = state.gateway.profile(&tenant).and_then(|p| p.policy_cases.clone());
            let source = format!("settings changed by {}", actor(&headers));
            let component = Arc::clone(active.component());
            let task_tenant = tenant.clone();
            let staged = tokio::task::spawn_blocking(move || {
                let candidate = Candidate::Component(component);
                registry.stage(&task_tenant, candidate, settings, &source, cases.as_deref())
            })
            .await
            .map_err(|e| BedrockError::internal(e.to_string()))?
            .map_err(refused)?;
            let _changing = begin(&state, &tenant).await?;
            let id = state.gateway.registry().activate_staged(staged).map_err(refused)?;
            tracing::info!(tenant = %tenant, version = %id, "activated new policy settings");
            let changed = Changed {
                activated: Some(id.to_string()),
                shadow: None,
            };
            saved(&state, &tenant, changed).await
        }
        .await,
    )
}

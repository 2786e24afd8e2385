//! Loading tenants' policies from a directory at start.
//!
//! One file per tenant, `<tenant-id>.toml`, beside the components it names:
//!
//! ```toml
//! policy = "budget_guard.wasm"        # relative to this file
//! cases = "budget-guard.cases.toml"   # optional: must pass before activation
//! failure-mode = "closed"             # or "open"
//! deadline-ms = 5
//! memory-limit-mib = 16
//! instances = "pooled"                # or "fresh"
//! max-idle-instances = 4
//!
//! [config]                            # the policy's parameters (JSON to the policy)
//! downgrade-at-percent = 80
//! ```
//!
//! Every file is checked; errors name the file and the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::instances::InstanceStrategy;
use crate::ids::PolicyVersionId;
use crate::ids::TenantId;
use crate::registry::Registry;
use crate::registry::cases::CasesFile;
use crate::registry::decision::FailureMode;
use crate::registry::version::PolicySettings;

/// One tenant's policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TenantPolicyFile {
    pub policy: PathBuf,
    pub cases: Option<PathBuf>,
    pub config: Option<toml::Table>,
    pub failure_mode: Option<FailureMode>,
    pub deadline_ms: Option<u64>,
    pub memory_limit_mib: Option<u32>,
    pub instances: Option<InstancesSetting>,
    pub max_idle_instances: Option<usize>,
    pub downgrade_chain: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstancesSetting {
    Fresh,
    Pooled,
}

impl TenantPolicyFile {
    /// The settings this file describes, over the defaults.
    pub fn settings(&self) -> PolicySettings {
        let defaults = PolicySettings::default();
        let default_idle = match defaults.instances {
            InstanceStrategy::Pooled { max_idle } => max_idle,
            InstanceStrategy::Fresh => 4,
        };
        let instances = match self.instances {
            Some(InstancesSetting::Fresh) => InstanceStrategy::Fresh,
            Some(InstancesSetting::Pooled) | None => InstanceStrategy::Pooled {
                max_idle: self.max_idle_instances.unwrap_or(default_idle),
            },
        };
        PolicySettings {
            config: self
                .config
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_default())
                .unwrap_or_default(),
            failure_mode: self.failure_mode.unwrap_or(defaults.failure_mode),
            deadline_ms: self.deadline_ms.unwrap_or(defaults.deadline_ms),
            memory_limit_mib: self.memory_limit_mib.unwrap_or(defaults.memory_limit_mib),
            instances,
            downgrade_chain: self.downgrade_chain.clone().unwrap_or_default(),
        }
    }
}

/// A tenant file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyDirError {
    pub path: PathBuf,
    pub message: String,
}

/// Loads every `*.toml` in `dir` into the registry. Files are independent:
/// each error is reported and the other tenants still load.
pub fn load(registry: &Registry, dir: &Path) -> (Vec<PolicyVersionId>, Vec<PolicyDirError>) {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            errors.push(PolicyDirError {
                path: dir.to_path_buf(),
                message: format!("cannot read the policy directory: {err}"),
            });
            return (loaded, errors);
        }
    };
    for path in tenant_files(entries) {
        match load_one(registry, &path) {
            Ok(id) => loaded.push(id),
            Err(message) => errors.push(PolicyDirError { path, message }),
        }
    }
    (loaded, errors)
}

fn load_one(registry: &Registry, path: &Path) -> Result<PolicyVersionId, String> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let tenant = TenantId::new(stem).map_err(|e| format!("the file name must be the tenant id: {e}"))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let file: TenantPolicyFile = toml::from_str(&text).map_err(|e| e.to_string())?;
    register_file(registry, &tenant, &file, path.parent().unwrap_or(Path::new(".")))
}

/// Registers the policy a tenant file describes, its paths relative to
/// `base`: reads the component and its cases, then validates and activates
/// it. Compiles, so call it off the async workers.
pub fn register_file(
    registry: &Registry,
    tenant: &TenantId,
    file: &TenantPolicyFile,
    base: &Path,
) -> Result<PolicyVersionId, String> {
    let (wasm_path, wasm) = read_component(file, base)?;
    let cases = match &file.cases {
        Some(cases) => Some(CasesFile::load(&base.join(cases)).map_err(|e| format!("cases: {e}"))?),
        None => None,
    };
    registry
        .register(
            tenant,
            &wasm,
            file.settings(),
            &wasm_path.display().to_string(),
            cases.as_ref(),
        )
        .map_err(|e| e.to_string())
}

/// Reads the component a tenant file names, relative to `base`.
pub fn read_component(file: &TenantPolicyFile, base: &Path) -> Result<(PathBuf, Vec<u8>), String> {
    let wasm_path = base.join(&file.policy);
    let wasm = std::fs::read(&wasm_path).map_err(|e| {
        format!(
            "policy = {:?}: cannot read {}: {e}. Build the policy first (tollgate policy build)",
            file.policy,
            wasm_path.display()
        )
    })?;
    Ok((wasm_path, wasm))
}

/// The tenant files among a directory's entries (`*.toml`, cases files
/// excepted), sorted.
pub fn tenant_files(entries: std::fs::ReadDir) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && !p.to_string_lossy().ends_with(".cases.toml"))
        .collect();
    files.sort();
    files
}

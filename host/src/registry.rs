//! Tenant → active policy version, with hot swap and rollback.
//!
//! Invariants:
//! - The tenant map and each tenant's active version are read without locks
//!   (`arc-swap`); a decision loads the active version once and finishes on
//!   it, so a swap never changes a call in flight and never blocks one.
//! - A version becomes active only after it has been compiled, checked
//!   against the contract, its config accepted by `validate-config`, and its
//!   bundled cases (if any) all passed. A refused version changes nothing.
//! - Writers (register, activate, rollback) are serialised; readers never
//!   wait for them.
//! - Each tenant keeps its last [`KEEP_VERSIONS`] versions for rollback;
//!   version numbers are never reused.

pub(crate) mod breaker;
pub mod cases;
pub(crate) mod decision;
pub(crate) mod lanes;
pub mod policy_dir;
pub(crate) mod pool;
pub(crate) mod version;

pub use breaker::BreakerSettings;
pub use decision::is_metadata_char;
pub use pool::{DecisionPool, PoolSettings};
pub use version::VerdictCheck;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::contract::{Request, TenantState};
use crate::engine::component::PolicyComponent;
use crate::engine::{LoadError, PolicyEngine};
use crate::ids::PolicyVersionId;
use crate::ids::TenantId;
use crate::registry::decision::Decision;
use crate::registry::version::{PolicySettings, PolicyVersion, VersionError};
use cases::CasesFile;

/// Versions kept per tenant for rollback.
pub const KEEP_VERSIONS: usize = 16;

/// Why a registry operation was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown tenant `{0}`: register a policy for it first")]
    UnknownTenant(TenantId),
    #[error("tenant `{tenant}`: {source}")]
    Load {
        tenant: TenantId,
        #[source]
        source: LoadError,
    },
    #[error("tenant `{tenant}`: {source}")]
    Version {
        tenant: TenantId,
        #[source]
        source: VersionError,
    },
    #[error(
        "tenant `{tenant}`: the new policy failed {failed} of {total} bundled cases, so it was not activated:\n{report}"
    )]
    CasesFailed {
        tenant: TenantId,
        failed: usize,
        total: usize,
        report: String,
    },
    #[error("tenant `{tenant}` has no version {number}; see its versions with `versions`")]
    UnknownVersion { tenant: TenantId, number: u32 },
    #[error("tenant `{0}` has no earlier version to roll back to")]
    NoPreviousVersion(TenantId),
}

/// One tenant's versions.
struct TenantPolicies {
    active: ArcSwap<PolicyVersion>,
    /// Kept versions, oldest first, and the order they were activated in.
    history: Mutex<History>,
}

struct History {
    versions: Vec<Arc<PolicyVersion>>,
    /// Version numbers in activation order; the last is active.
    activations: Vec<u32>,
}

/// The tenant → policy registry. Cheap to share behind `Arc`.
pub struct Registry {
    engine: PolicyEngine,
    breaker: BreakerSettings,
    tenants: ArcSwap<HashMap<TenantId, Arc<TenantPolicies>>>,
    writer: Mutex<()>,
    /// Last version number handed out per tenant; taken when staging starts
    /// so concurrent uploads get distinct numbers.
    numbers: Mutex<HashMap<TenantId, u32>>,
}

impl Registry {
    pub fn new(engine: PolicyEngine) -> Self {
        Registry {
            engine,
            breaker: BreakerSettings::default(),
            tenants: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
            numbers: Mutex::new(HashMap::new()),
        }
    }

    /// When a version failing call after call is skipped; applies to
    /// versions registered from now on.
    pub fn with_breaker(mut self, breaker: BreakerSettings) -> Self {
        self.breaker = breaker;
        self
    }

    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// Decides one call with the tenant's active version.
    pub fn decide(
        &self,
        tenant: &TenantId,
        request: &mut Request,
        state: &TenantState,
    ) -> Result<Decision, RegistryError> {
        let version = self
            .active(tenant)
            .ok_or_else(|| RegistryError::UnknownTenant(tenant.clone()))?;
        Ok(version.decide(request, state))
    }

    /// [`Registry::decide`] with the host's own check of the verdict; see
    /// [`PolicyVersion::decide_checked`].
    pub fn decide_checked(
        &self,
        tenant: &TenantId,
        request: &mut Request,
        state: &TenantState,
        host_check: &VerdictCheck<'_>,
    ) -> Result<Decision, RegistryError> {
        let version = self
            .active(tenant)
            .ok_or_else(|| RegistryError::UnknownTenant(tenant.clone()))?;
        Ok(version.decide_checked(request, state, host_check))
    }

    /// The tenant's active version; holding it keeps it alive across swaps.
    pub fn active(&self, tenant: &TenantId) -> Option<Arc<PolicyVersion>> {
        self.tenants.load().get(tenant).map(|t| t.active.load_full())
    }

    /// Tenants with a policy, sorted.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self.tenants.load().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The tenant's kept versions, oldest first.
    pub fn versions(&self, tenant: &TenantId) -> Vec<Arc<PolicyVersion>> {
        self.tenants
            .load()
            .get(tenant)
            .map_or_else(Vec::new, |t| lock(&t.history).versions.clone())
    }

    /// Compiles, checks and activates a new version of the tenant's policy.
    pub fn register(
        &self,
        tenant: &TenantId,
        wasm: &[u8],
        settings: PolicySettings,
        source: &str,
        cases: Option<&CasesFile>,
    ) -> Result<PolicyVersionId, RegistryError> {
        let component = self.engine.load(wasm).map_err(|source| RegistryError::Load {
            tenant: tenant.clone(),
            source,
        })?;
        self.register_component(tenant, component, settings, source, cases)
    }

    /// As [`Registry::register`], for an already loaded component.
    pub fn register_component(
        &self,
        tenant: &TenantId,
        component: Arc<PolicyComponent>,
        settings: PolicySettings,
        source: &str,
        cases: Option<&CasesFile>,
    ) -> Result<PolicyVersionId, RegistryError> {
        let version = self.stage(tenant, component, settings, source, cases)?;
        let _writer = lock(&self.writer);
        let id = version.id().clone();
        self.install(tenant, version);
        Ok(id)
    }

    /// Builds and validates a version without touching the registry.
    fn stage(
        &self,
        tenant: &TenantId,
        component: Arc<PolicyComponent>,
        settings: PolicySettings,
        source: &str,
        cases: Option<&CasesFile>,
    ) -> Result<Arc<PolicyVersion>, RegistryError> {
        let number = {
            let mut numbers = lock(&self.numbers);
            let last = numbers.entry(tenant.clone()).or_insert(0);
            *last += 1;
            *last
        };
        let version = PolicyVersion::build(&self.engine, component, tenant.clone(), number, settings, source.into())
            .map_err(|source| RegistryError::Version {
                tenant: tenant.clone(),
                source,
            })?
            .with_breaker(self.breaker);
        if let Some(cases) = cases {
            let outcomes = cases::run(&version, cases);
            let failed: Vec<String> = outcomes.iter().filter(|o| !o.passed()).map(|o| o.to_string()).collect();
            if !failed.is_empty() {
                return Err(RegistryError::CasesFailed {
                    tenant: tenant.clone(),
                    failed: failed.len(),
                    total: outcomes.len(),
                    report: failed.join("\n"),
                });
            }
        }
        Ok(Arc::new(version))
    }

    /// Makes `version` the tenant's active one. Caller holds the writer lock.
    fn install(&self, tenant: &TenantId, version: Arc<PolicyVersion>) {
        let current = self.tenants.load();
        let number = version.id().number;
        if let Some(existing) = current.get(tenant) {
            let mut history = lock(&existing.history);
            history.versions.push(Arc::clone(&version));
            history.activations.push(number);
            prune(&mut history);
            existing.active.swap(version).release_idle();
            return;
        }
        let policies = Arc::new(TenantPolicies {
            active: ArcSwap::new(Arc::clone(&version)),
            history: Mutex::new(History {
                versions: vec![version],
                activations: vec![number],
            }),
        });
        let mut next = HashMap::clone(&current);
        next.insert(tenant.clone(), policies);
        self.tenants.store(Arc::new(next));
    }

    /// Re-activates a kept version.
    pub fn activate(&self, tenant: &TenantId, number: u32) -> Result<PolicyVersionId, RegistryError> {
        let _writer = lock(&self.writer);
        let tenants = self.tenants.load();
        let policies = tenants
            .get(tenant)
            .ok_or_else(|| RegistryError::UnknownTenant(tenant.clone()))?;
        let mut history = lock(&policies.history);
        let version = history
            .versions
            .iter()
            .find(|v| v.id().number == number)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownVersion {
                tenant: tenant.clone(),
                number,
            })?;
        history.activations.push(number);
        version.keep_idle();
        let previous = policies.active.swap(Arc::clone(&version));
        if !Arc::ptr_eq(&previous, &version) {
            previous.release_idle();
        }
        Ok(version.id().clone())
    }

    /// Goes back to the version that was active before the current one.
    pub fn rollback(&self, tenant: &TenantId) -> Result<PolicyVersionId, RegistryError> {
        let _writer = lock(&self.writer);
        let tenants = self.tenants.load();
        let policies = tenants
            .get(tenant)
            .ok_or_else(|| RegistryError::UnknownTenant(tenant.clone()))?;
        let mut history = lock(&policies.history);
        while history.activations.len() > 1 {
            history.activations.pop();
            let Some(&previous) = history.activations.last() else {
                break;
            };
            if let Some(version) = history.versions.iter().find(|v| v.id().number == previous).cloned() {
                version.keep_idle();
                policies.active.swap(Arc::clone(&version)).release_idle();
                return Ok(version.id().clone());
            }
        }
        Err(RegistryError::NoPreviousVersion(tenant.clone()))
    }

    /// Removes a tenant; its calls in flight finish on their version.
    pub fn remove(&self, tenant: &TenantId) -> bool {
        let _writer = lock(&self.writer);
        let current = self.tenants.load();
        if !current.contains_key(tenant) {
            return false;
        }
        let mut next = HashMap::clone(&current);
        next.remove(tenant);
        self.tenants.store(Arc::new(next));
        true
    }
}

/// Drops the oldest versions beyond [`KEEP_VERSIONS`], never the active one.
fn prune(history: &mut History) {
    while history.versions.len() > KEEP_VERSIONS {
        let active = history.activations.last().copied();
        let Some(pos) = history.versions.iter().position(|v| Some(v.id().number) != active) else {
            break;
        };
        let gone = history.versions.remove(pos).id().number;
        history.activations.retain(|&n| n != gone);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the history half-written:
    // every update is a push or a swap, so the data is usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

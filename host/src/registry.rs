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
//! - Activations happen in the order they were requested: a version's number
//!   is taken when its staging starts, and a version that finishes compiling
//!   after a later-requested one was activated is kept but not activated.
//! - Only the active and the shadow version keep warm instances; a version
//!   that stops being either frees its idle ones.

pub(crate) mod breaker;
pub mod cases;
pub(crate) mod decision;
pub(crate) mod lanes;
pub mod policy_dir;
pub(crate) mod pool;
pub mod shadow;
pub(crate) mod version;

pub use breaker::BreakerSettings;
pub use decision::is_metadata_char;
pub use pool::{DecisionPool, PoolSettings};
pub use shadow::{Compared, Shadow, ShadowReport};
pub use version::VerdictCheck;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

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
    #[error(
        "tenant `{tenant}`: version {number} passed its checks but was not activated, because version {newer}, \
         requested after it, was activated first; activate it by number if it is still wanted"
    )]
    Superseded { tenant: TenantId, number: u32, newer: u32 },
    #[error("tenant `{0}` has no shadow version; set one first")]
    NoShadow(TenantId),
}

/// One tenant's versions.
struct TenantPolicies {
    active: ArcSwap<PolicyVersion>,
    /// A candidate deciding beside the active version, never enforced.
    shadow: ArcSwapOption<Shadow>,
    /// Kept versions, oldest first, and the order they were activated in.
    history: Mutex<History>,
}

struct History {
    versions: Vec<Arc<PolicyVersion>>,
    /// Version numbers in activation order; the last is active.
    activations: Vec<u32>,
    /// The highest number activated on its own request (not a rollback):
    /// an upload staged before it finishes too late to be activated.
    newest_requested: u32,
}

/// A tenant's versions and what is active: what a store keeps.
pub struct Snapshot {
    /// Oldest first.
    pub versions: Vec<Arc<PolicyVersion>>,
    /// Version numbers in activation order; the last is active.
    pub activations: Vec<u32>,
    pub shadow: Option<u32>,
    /// The last version number handed out.
    pub last_number: u32,
}

/// What a version is built from.
pub enum Candidate<'a> {
    /// A component's bytes, compiled while staging.
    Wasm(&'a [u8]),
    /// A component already loaded.
    Component(Arc<PolicyComponent>),
}

/// A version compiled and checked, not yet active; see [`Registry::stage`].
pub struct Staged {
    version: Arc<PolicyVersion>,
}

impl Staged {
    pub fn id(&self) -> &PolicyVersionId {
        self.version.id()
    }
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
        let staged = self.stage(tenant, Candidate::Wasm(wasm), settings, source, cases)?;
        self.activate_staged(staged)
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
        let staged = self.stage(tenant, Candidate::Component(component), settings, source, cases)?;
        self.activate_staged(staged)
    }

    /// Activates a staged version, unless a version staged after it was
    /// activated first ([`RegistryError::Superseded`]; it is kept).
    pub fn activate_staged(&self, staged: Staged) -> Result<PolicyVersionId, RegistryError> {
        let _writer = lock(&self.writer);
        let id = staged.version.id().clone();
        self.install(&id.tenant, staged.version)?;
        Ok(id)
    }

    /// Compiles and checks a candidate and makes it the tenant's shadow, in
    /// place of any earlier one. The active version is untouched.
    pub fn set_shadow(
        &self,
        tenant: &TenantId,
        wasm: &[u8],
        settings: PolicySettings,
        source: &str,
        cases: Option<&CasesFile>,
    ) -> Result<PolicyVersionId, RegistryError> {
        let policies = self.policies(tenant)?;
        let version = self
            .stage(tenant, Candidate::Wasm(wasm), settings, source, cases)?
            .version;
        let _writer = lock(&self.writer);
        let id = version.id().clone();
        let mut history = lock(&policies.history);
        history.versions.push(Arc::clone(&version));
        self.swap_shadow(&policies, Some(version));
        prune(&mut history, self.shadow_number(&policies));
        Ok(id)
    }

    /// Makes a kept version the tenant's shadow.
    pub fn shadow_version(&self, tenant: &TenantId, number: u32) -> Result<PolicyVersionId, RegistryError> {
        let policies = self.policies(tenant)?;
        let _writer = lock(&self.writer);
        let version = kept(&lock(&policies.history), tenant, number)?;
        version.keep_idle();
        let id = version.id().clone();
        self.swap_shadow(&policies, Some(version));
        Ok(id)
    }

    /// Stops shadowing; returns the version that was the shadow.
    pub fn clear_shadow(&self, tenant: &TenantId) -> Result<PolicyVersionId, RegistryError> {
        let policies = self.policies(tenant)?;
        let _writer = lock(&self.writer);
        let gone = policies
            .shadow
            .load_full()
            .ok_or_else(|| RegistryError::NoShadow(tenant.clone()))?;
        self.swap_shadow(&policies, None);
        Ok(gone.version().id().clone())
    }

    /// The tenant's shadow, with its counters.
    pub fn shadow(&self, tenant: &TenantId) -> Option<Arc<Shadow>> {
        self.tenants.load().get(tenant).and_then(|t| t.shadow.load_full())
    }

    /// Makes the shadow the active version, in one step, and stops shadowing.
    pub fn promote(&self, tenant: &TenantId) -> Result<PolicyVersionId, RegistryError> {
        let policies = self.policies(tenant)?;
        let _writer = lock(&self.writer);
        let shadow = policies
            .shadow
            .load_full()
            .ok_or_else(|| RegistryError::NoShadow(tenant.clone()))?;
        let version = Arc::clone(shadow.version());
        let mut history = lock(&policies.history);
        history.activations.push(version.id().number);
        history.newest_requested = history.newest_requested.max(version.id().number);
        policies.shadow.store(None);
        let previous = policies.active.swap(Arc::clone(&version));
        if !Arc::ptr_eq(&previous, &version) {
            previous.release_idle();
        }
        Ok(version.id().clone())
    }

    fn policies(&self, tenant: &TenantId) -> Result<Arc<TenantPolicies>, RegistryError> {
        self.tenants
            .load()
            .get(tenant)
            .cloned()
            .ok_or_else(|| RegistryError::UnknownTenant(tenant.clone()))
    }

    fn shadow_number(&self, policies: &TenantPolicies) -> Option<u32> {
        policies.shadow.load().as_ref().map(|s| s.version().id().number)
    }

    /// Replaces the shadow; the one replaced frees its idle instances unless
    /// it is also the active version. Caller holds the writer lock.
    fn swap_shadow(&self, policies: &TenantPolicies, next: Option<Arc<PolicyVersion>>) {
        let next = next.map(|v| Arc::new(Shadow::new(v)));
        if let Some(previous) = policies.shadow.swap(next) {
            let active = policies.active.load();
            if !Arc::ptr_eq(previous.version(), &active) {
                previous.version().release_idle();
            }
        }
    }

    /// Compiles, builds and validates a version without touching the
    /// registry. Its number is taken first, so activations follow the order
    /// in which staging was asked for, whatever the compile times.
    pub fn stage(
        &self,
        tenant: &TenantId,
        candidate: Candidate<'_>,
        settings: PolicySettings,
        source: &str,
        cases: Option<&CasesFile>,
    ) -> Result<Staged, RegistryError> {
        let number = {
            let mut numbers = lock(&self.numbers);
            let last = numbers.entry(tenant.clone()).or_insert(0);
            *last += 1;
            *last
        };
        let component = match candidate {
            Candidate::Component(component) => component,
            Candidate::Wasm(wasm) => self.engine.load(wasm).map_err(|source| RegistryError::Load {
                tenant: tenant.clone(),
                source,
            })?,
        };
        let version = Arc::new(self.build(tenant, number, component, settings, source)?);
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
        // Staged to be activated or shadowed: its first decision finds an
        // instance ready (an interpreter takes milliseconds to start).
        version.prewarm();
        Ok(Staged { version })
    }

    /// Makes `version` the tenant's active one, unless a version requested
    /// after it was activated meanwhile. Caller holds the writer lock.
    fn install(&self, tenant: &TenantId, version: Arc<PolicyVersion>) -> Result<(), RegistryError> {
        let current = self.tenants.load();
        let number = version.id().number;
        if let Some(existing) = current.get(tenant) {
            let mut history = lock(&existing.history);
            history.versions.push(Arc::clone(&version));
            let newer = history.newest_requested;
            if number < newer {
                // Kept, so it can still be activated by number; not warm.
                version.release_idle();
                prune(&mut history, self.shadow_number(existing));
                return Err(RegistryError::Superseded {
                    tenant: tenant.clone(),
                    number,
                    newer,
                });
            }
            history.newest_requested = number;
            history.activations.push(number);
            prune(&mut history, self.shadow_number(existing));
            existing.active.swap(version).release_idle();
            return Ok(());
        }
        let policies = Arc::new(TenantPolicies {
            active: ArcSwap::new(Arc::clone(&version)),
            shadow: ArcSwapOption::empty(),
            history: Mutex::new(History {
                versions: vec![version],
                activations: vec![number],
                newest_requested: number,
            }),
        });
        let mut next = HashMap::clone(&current);
        next.insert(tenant.clone(), policies);
        self.tenants.store(Arc::new(next));
        Ok(())
    }

    /// Re-activates a kept version. Activating the shadow promotes it.
    pub fn activate(&self, tenant: &TenantId, number: u32) -> Result<PolicyVersionId, RegistryError> {
        let policies = self.policies(tenant)?;
        let _writer = lock(&self.writer);
        let mut history = lock(&policies.history);
        let version = kept(&history, tenant, number)?;
        history.activations.push(number);
        history.newest_requested = history.newest_requested.max(number);
        if self.shadow_number(&policies) == Some(number) {
            policies.shadow.store(None);
        }
        version.keep_idle();
        let previous = policies.active.swap(Arc::clone(&version));
        if !Arc::ptr_eq(&previous, &version) && self.shadow_number(&policies) != Some(previous.id().number) {
            previous.release_idle();
        }
        Ok(version.id().clone())
    }

    /// Goes back to the version that was active before the current one.
    pub fn rollback(&self, tenant: &TenantId) -> Result<PolicyVersionId, RegistryError> {
        let policies = self.policies(tenant)?;
        let _writer = lock(&self.writer);
        let mut history = lock(&policies.history);
        while history.activations.len() > 1 {
            history.activations.pop();
            let Some(&previous) = history.activations.last() else {
                break;
            };
            if let Some(version) = history.versions.iter().find(|v| v.id().number == previous).cloned() {
                version.keep_idle();
                let replaced = policies.active.swap(Arc::clone(&version));
                if self.shadow_number(&policies) != Some(replaced.id().number) {
                    replaced.release_idle();
                }
                return Ok(version.id().clone());
            }
        }
        Err(RegistryError::NoPreviousVersion(tenant.clone()))
    }

    /// A tenant's versions and what is active, for saving.
    pub fn snapshot(&self, tenant: &TenantId) -> Option<Snapshot> {
        let policies = self.tenants.load().get(tenant).cloned()?;
        let _writer = lock(&self.writer);
        let history = lock(&policies.history);
        Some(Snapshot {
            versions: history.versions.clone(),
            activations: history.activations.clone(),
            shadow: self.shadow_number(&policies),
            last_number: lock(&self.numbers).get(tenant).copied().unwrap_or(0),
        })
    }

    /// Puts back a tenant's versions as a snapshot had them, replacing any it
    /// has. Versions are built by the caller (see [`Registry::build`]); an
    /// activation or shadow naming a version not given is dropped.
    pub fn restore(&self, tenant: &TenantId, snapshot: Snapshot) -> Result<PolicyVersionId, RegistryError> {
        let Snapshot {
            versions,
            mut activations,
            shadow,
            last_number,
        } = snapshot;
        activations.retain(|n| versions.iter().any(|v| v.id().number == *n));
        let active = activations
            .last()
            .and_then(|n| versions.iter().find(|v| v.id().number == *n))
            .cloned()
            .ok_or_else(|| RegistryError::NoPreviousVersion(tenant.clone()))?;
        let shadow = shadow.and_then(|n| versions.iter().find(|v| v.id().number == n).cloned());
        active.prewarm();
        if let Some(shadow) = &shadow {
            shadow.prewarm();
        }
        let _writer = lock(&self.writer);
        {
            let mut numbers = lock(&self.numbers);
            let last = numbers.entry(tenant.clone()).or_insert(0);
            *last = (*last).max(last_number);
        }
        let policies = Arc::new(TenantPolicies {
            active: ArcSwap::new(Arc::clone(&active)),
            shadow: ArcSwapOption::new(shadow.map(|v| Arc::new(Shadow::new(v)))),
            history: Mutex::new(History {
                newest_requested: activations.iter().copied().max().unwrap_or(0),
                versions,
                activations,
            }),
        });
        let current = self.tenants.load();
        let mut next = HashMap::clone(&current);
        if let Some(replaced) = next.insert(tenant.clone(), policies) {
            let was = replaced.active.load_full();
            // A version that stays active keeps its warm instances.
            if !Arc::ptr_eq(&was, &active) {
                was.release_idle();
            }
        }
        self.tenants.store(Arc::new(next));
        Ok(active.id().clone())
    }

    /// Builds a version with a given number (one restored from a store),
    /// checking its config as any version's.
    pub fn build(
        &self,
        tenant: &TenantId,
        number: u32,
        component: Arc<PolicyComponent>,
        settings: PolicySettings,
        source: &str,
    ) -> Result<PolicyVersion, RegistryError> {
        let version = PolicyVersion::build(&self.engine, component, tenant.clone(), number, settings, source.into())
            .map_err(|source| RegistryError::Version {
                tenant: tenant.clone(),
                source,
            })?
            .with_breaker(self.breaker);
        Ok(version)
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

/// Drops the oldest versions beyond [`KEEP_VERSIONS`], never the active
/// one nor the shadow.
fn prune(history: &mut History, shadow: Option<u32>) {
    while history.versions.len() > KEEP_VERSIONS {
        let active = history.activations.last().copied();
        let Some(pos) = history
            .versions
            .iter()
            .position(|v| Some(v.id().number) != active && Some(v.id().number) != shadow)
        else {
            break;
        };
        let gone = history.versions.remove(pos).id().number;
        history.activations.retain(|&n| n != gone);
    }
}

/// A kept version by number.
fn kept(history: &History, tenant: &TenantId, number: u32) -> Result<Arc<PolicyVersion>, RegistryError> {
    history
        .versions
        .iter()
        .find(|v| v.id().number == number)
        .cloned()
        .ok_or_else(|| RegistryError::UnknownVersion {
            tenant: tenant.clone(),
            number,
        })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the history half-written:
    // every update is a push or a swap, so the data is usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

//! Policy changes that are kept: the registry, plus the control store that
//! lets a restart find them (none with `[control] store = "memory"`).
//!
//! At start, a tenant's kept versions come back first, with their numbers,
//! activations and shadow. Then the configured policy is the seed: if it is
//! not the one seeded last time (another component or other settings), it
//! becomes a new version and is activated, as an edit of the file is a
//! deploy. If it is the same, the kept state wins, so an upload, rollback or
//! promotion through the admin API survives the restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use crate::control::{ControlError, ControlStore, PolicyRecord, TenantRecord, VersionRecord, seed_key};
use crate::engine::artifact_cache::content_digest;
use crate::ids::{PolicyVersionId, TenantId};
use crate::registry::cases::CasesFile;
use crate::registry::version::PolicySettings;
use crate::registry::version::PolicyVersion;
use crate::registry::{Candidate, Registry, Snapshot};

/// A tenant's configured policy.
pub struct Seed<'a> {
    pub wasm: &'a [u8],
    pub settings: PolicySettings,
    pub source: String,
    pub cases: Option<&'a CasesFile>,
}

pub struct PolicyLifecycle {
    registry: Arc<Registry>,
    store: Option<Arc<dyn ControlStore>>,
    /// Serialises saves, so the last write is of the latest state.
    saving: Mutex<HashMap<TenantId, String>>,
    /// Tenants whose policies this replica is changing and has not saved
    /// yet (see [`Changing`]).
    unsaved: Mutex<HashMap<TenantId, usize>>,
}

/// A change to a tenant's policies in progress here, from the registry's
/// change until its save. Meanwhile the fleet's stored state is not applied
/// over it (which would lose it, and then be saved back as if it were the
/// change); the save announces it, and the fleet follows.
pub struct Changing {
    lifecycle: Arc<PolicyLifecycle>,
    tenant: TenantId,
}

impl Drop for Changing {
    fn drop(&mut self) {
        let mut unsaved = self.lifecycle.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = unsaved.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                unsaved.remove(&self.tenant);
            }
        }
    }
}

impl PolicyLifecycle {
    pub fn new(registry: Arc<Registry>, store: Option<Arc<dyn ControlStore>>) -> Self {
        PolicyLifecycle {
            registry,
            store,
            saving: Mutex::new(HashMap::new()),
            unsaved: Mutex::new(HashMap::new()),
        }
    }

    /// Call before changing a tenant's policies in the registry; keep it
    /// until the change is saved.
    pub fn changing(self: &Arc<Self>, tenant: &TenantId) -> Changing {
        *self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.clone())
            .or_insert(0) += 1;
        Changing {
            lifecycle: Arc::clone(self),
            tenant: tenant.clone(),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Whether changes outlive the process.
    pub fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    /// Whether a change could be kept now (asked before it takes effect).
    pub fn check_writable(&self) -> Result<(), ControlError> {
        self.store.as_ref().map_or(Ok(()), |store| store.check_writable())
    }

    /// Keeps a component's bytes; call before the version naming it is activated.
    pub fn keep_component(&self, wasm: &[u8]) -> Result<(), ControlError> {
        match &self.store {
            Some(store) => store.put_component(&content_digest(wasm), wasm),
            None => Ok(()),
        }
    }

    /// Saves a tenant's runtime definition before it applies.
    pub fn keep_tenant(&self, tenant: &TenantId, record: &TenantRecord) -> Result<(), String> {
        match &self.store {
            Some(store) => store.put_tenant(tenant, Some(record)).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// Writes the tenant's versions and what is active, after a change.
    pub fn save(&self, tenant: &TenantId) -> Result<(), ControlError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let seeds = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let Some(snapshot) = self.registry.snapshot(tenant) else {
            return Ok(());
        };
        let record = PolicyRecord {
            versions: snapshot
                .versions
                .iter()
                .map(|v| VersionRecord {
                    number: v.id().number,
                    digest: v.component().digest().to_owned(),
                    settings: v.settings().clone(),
                    source: v.source().to_owned(),
                    created_at_ms: v
                        .created_at()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                })
                .collect(),
            activations: snapshot.activations,
            shadow: snapshot.shadow,
            last_number: snapshot.last_number,
            seed: seeds.get(tenant).cloned(),
        };
        store.save_policies(tenant, &record)
    }

    /// Brings a tenant's kept versions back, then applies its configured
    /// policy as the seed (see the module doc). Compiles: call it off the
    /// async workers.
    pub fn start_tenant(&self, tenant: &TenantId, seed: Seed<'_>) -> Result<PolicyVersionId, String> {
        let record = match &self.store {
            Some(store) => store.policies(tenant).map_err(|e| e.to_string())?,
            None => None,
        };
        let mut restored = false;
        if let Some(record) = &record {
            restored = self.restore(tenant, record);
        }
        let component = self
            .registry
            .engine()
            .load(seed.wasm)
            .map_err(|e| format!("{}: {e}", seed.source))?;
        let key = seed_key(component.digest(), &seed.settings);
        let seeded = record.as_ref().and_then(|r| r.seed.as_deref()) == Some(key.as_str());
        let id = if restored && seeded {
            self.registry
                .active(tenant)
                .map(|v| v.id().clone())
                .ok_or_else(|| format!("tenant {tenant}: no active version after restoring"))?
        } else {
            let staged = self
                .registry
                .stage(
                    tenant,
                    Candidate::Component(component),
                    seed.settings,
                    &seed.source,
                    seed.cases,
                )
                .map_err(|e| e.to_string())?;
            self.keep_component(seed.wasm).map_err(|e| e.to_string())?;
            self.registry.activate_staged(staged).map_err(|e| e.to_string())?
        };
        self.saving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone(), key);
        self.save(tenant).map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// Brings back the kept versions of a tenant created at runtime (no
    /// configured policy). `None` when it has none yet.
    pub fn resume_tenant(&self, tenant: &TenantId) -> Result<Option<PolicyVersionId>, String> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let Some(record) = store.policies(tenant).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        if !self.restore(tenant, &record) {
            return Ok(None);
        }
        Ok(self.registry.active(tenant).map(|v| v.id().clone()))
    }

    /// Makes the tenant's versions, activations and shadow those stored, if
    /// they differ (another replica changed them). Versions this replica has
    /// already, same number and component and settings, are kept as they
    /// are, warm instances included. Compiles: call it off the async
    /// workers. True when something changed.
    pub fn sync_policies(&self, tenant: &TenantId) -> Result<bool, String> {
        self.apply_stored(tenant, false)
    }

    /// [`sync_policies`](Self::sync_policies) even over an unsaved change:
    /// for undoing one the store refused.
    pub fn take_stored(&self, tenant: &TenantId) -> Result<bool, String> {
        self.apply_stored(tenant, true)
    }

    fn apply_stored(&self, tenant: &TenantId, over_unsaved: bool) -> Result<bool, String> {
        if !over_unsaved && self.is_unsaved(tenant) {
            // This replica's own change is on its way to the store; its save is announced.
            return Ok(false);
        }
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let Some(record) = store.policies(tenant).map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        if let Some(local) = self.registry.snapshot(tenant)
            && same_policies(&local, &record)
        {
            return Ok(false);
        }
        Ok(self.restore_unless(tenant, &record, !over_unsaved))
    }

    fn is_unsaved(&self, tenant: &TenantId) -> bool {
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(tenant)
    }

    /// Rebuilds the kept versions; false when none could be, or none is active.
    fn restore(&self, tenant: &TenantId, record: &PolicyRecord) -> bool {
        self.restore_unless(tenant, record, false)
    }

    /// [`restore`](Self::restore); with `yield_to_unsaved`, the swap is
    /// skipped if a change here began while the versions were being built.
    /// The check and the swap hold the lock [`changing`](Self::changing)
    /// takes, so a change is either made over the stored state or kept.
    fn restore_unless(&self, tenant: &TenantId, record: &PolicyRecord, yield_to_unsaved: bool) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let local = self.registry.snapshot(tenant).map(|s| s.versions).unwrap_or_default();
        let mut versions = Vec::new();
        for kept in &record.versions {
            if let Some(same) = local.iter().find(|v| same_version(v, kept)) {
                versions.push(Arc::clone(same));
                continue;
            }
            let built = store
                .component(&kept.digest)
                .map_err(|e| e.to_string())
                .and_then(|bytes| bytes.ok_or_else(|| format!("component {} is missing", kept.digest)))
                .and_then(|bytes| self.registry.engine().load(&bytes).map_err(|e| e.to_string()))
                .and_then(|component| {
                    self.registry
                        .build(tenant, kept.number, component, kept.settings.clone(), &kept.source)
                        .map_err(|e| e.to_string())
                });
            match built {
                Ok(version) => {
                    let created = UNIX_EPOCH + Duration::from_millis(kept.created_at_ms);
                    versions.push(Arc::new(version.with_created_at(created)));
                }
                Err(why) => tracing::warn!(
                    tenant = %tenant,
                    version = kept.number,
                    why = %why,
                    "a kept policy version could not be restored; it is dropped"
                ),
            }
        }
        let snapshot = Snapshot {
            versions,
            activations: record.activations.clone(),
            shadow: record.shadow,
            last_number: record.last_number,
        };
        let unsaved = self.unsaved.lock().unwrap_or_else(|p| p.into_inner());
        if yield_to_unsaved && unsaved.contains_key(tenant) {
            return false;
        }
        let restored = self.registry.restore(tenant, snapshot);
        drop(unsaved);
        match restored {
            Ok(id) => {
                tracing::info!(tenant = %tenant, version = %id, "restored the policy versions kept from the last run");
                true
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "no kept policy version could be made active");
                false
            }
        }
    }
}

fn same_version(version: &PolicyVersion, kept: &VersionRecord) -> bool {
    version.id().number == kept.number
        && version.component().digest() == kept.digest
        && *version.settings() == kept.settings
}

/// Whether the registry already has what the record says.
fn same_policies(local: &Snapshot, record: &PolicyRecord) -> bool {
    local.activations == record.activations
        && local.shadow == record.shadow
        && local.versions.len() == record.versions.len()
        && local
            .versions
            .iter()
            .zip(&record.versions)
            .all(|(v, kept)| same_version(v, kept))
}

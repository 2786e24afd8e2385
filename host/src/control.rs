//! Runtime changes that must outlive the process: tenants created or
//! changed through the admin API, their keys, and the policy versions
//! uploaded, activated or shadowed, with the components stored by content.
//! `tollgate.toml` is the seed; `docs/operations.md` says which wins.

#[cfg(feature = "redis")]
mod fleet_control;
#[cfg(feature = "redis")]
mod redis_control;
mod store;
mod tenant_record;

use serde::{Deserialize, Serialize};

#[cfg(feature = "redis")]
pub use fleet_control::{FleetControl, Reached};
#[cfg(feature = "redis")]
pub use redis_control::{Change, RedisControl};
pub use store::FileControl;
pub use tenant_record::{AccessKeyRecord, ApiKeyRecord, TenantRecord};

use crate::ids::TenantId;
use crate::registry::version::PolicySettings;

/// Where runtime changes are kept: one gateway's file ([`FileControl`]),
/// or Redis for a fleet of replicas (`FleetControl`, with a local copy).
///
/// Invariants every store keeps:
/// - A tenant's record is written whole, after the change it describes, so
///   a restart finds a state that existed.
/// - A component is written before any record names it.
pub trait ControlStore: Send + Sync {
    /// Stores a component under its digest (idempotent).
    fn put_component(&self, digest: &str, wasm: &[u8]) -> Result<(), ControlError>;

    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, ControlError>;

    fn policies(&self, tenant: &TenantId) -> Result<Option<PolicyRecord>, ControlError>;

    /// Every kept tenant, by id.
    fn tenants(&self) -> Result<Vec<(TenantId, TenantRecord)>, ControlError>;

    /// Writes a tenant's record whole (`None` forgets the tenant).
    fn put_tenant(&self, tenant: &TenantId, record: Option<&TenantRecord>) -> Result<(), ControlError>;

    /// Whether a change could be kept now: asked before a change takes
    /// effect, so one the store cannot keep is refused first.
    fn check_writable(&self) -> Result<(), ControlError> {
        Ok(())
    }

    /// Writes a tenant's policy record whole. A shared store refuses one
    /// that would overwrite a version another replica saved meanwhile.
    fn save_policies(&self, tenant: &TenantId, record: &PolicyRecord) -> Result<(), ControlError>;
}

/// The store could not be read or written; the message names the store.
#[derive(Debug, thiserror::Error)]
#[error("control store {store}: {message}")]
pub struct ControlError {
    pub store: String,
    pub message: String,
}

/// One kept version of a tenant's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VersionRecord {
    pub number: u32,
    /// The component's full SHA-256, hex: its key in the component table.
    pub digest: String,
    pub settings: PolicySettings,
    pub source: String,
    pub created_at_ms: u64,
}

/// A tenant's policy versions and what is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyRecord {
    /// Oldest first.
    pub versions: Vec<VersionRecord>,
    /// Version numbers in activation order; the last is active.
    pub activations: Vec<u32>,
    pub shadow: Option<u32>,
    /// The last number handed out.
    pub last_number: u32,
    /// What the configuration's policy was when it was last seeded; a
    /// different one at start is a new version (see [`seed_key`]).
    pub seed: Option<String>,
}

impl PolicyRecord {
    pub fn active(&self) -> Option<u32> {
        self.activations.last().copied()
    }
}

/// What identifies a configured policy: its component and its settings.
pub fn seed_key(digest: &str, settings: &PolicySettings) -> String {
    use sha2::{Digest, Sha256};
    let settings = serde_json::to_string(settings).unwrap_or_default();
    let mut hash = Sha256::new();
    hash.update(digest.as_bytes());
    hash.update([0]);
    hash.update(settings.as_bytes());
    hex::encode(hash.finalize())
}

//! The control store: one redb file of runtime changes.
//!
//! Invariants:
//! - A tenant's record is written whole in one transaction, after the
//!   change it describes, so a restart finds a state that existed.
//! - A component is written before any record names it, and deleted only
//!   when no tenant's record names it any more.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use super::{ControlStore, PolicyRecord, TenantRecord};
use crate::ids::TenantId;

/// Component bytes by full SHA-256 digest.
const COMPONENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("components");
/// Tenant id → its [`PolicyRecord`] as JSON.
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("policies");
/// Tenant id → its [`TenantRecord`] as JSON.
const TENANTS: TableDefinition<&str, &[u8]> = TableDefinition::new("tenants");

use super::ControlError;

/// The control store of one gateway: one redb file.
pub struct FileControl {
    db: Database,
    path: PathBuf,
}

impl FileControl {
    pub fn open(path: &Path) -> Result<FileControl, ControlError> {
        let fail = |message: String| ControlError {
            store: path.display().to_string(),
            message,
        };
        let db = Database::create(path).map_err(|e| fail(format!("cannot open: {e}")))?;
        let store = FileControl {
            db,
            path: path.to_path_buf(),
        };
        // Create the tables, so reads of an empty store find them.
        let txn = store.db.begin_write().map_err(|e| fail(e.to_string()))?;
        txn.open_table(COMPONENTS).map_err(|e| fail(e.to_string()))?;
        txn.open_table(POLICIES).map_err(|e| fail(e.to_string()))?;
        txn.open_table(TENANTS).map_err(|e| fail(e.to_string()))?;
        txn.commit().map_err(|e| fail(e.to_string()))?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> ControlError {
        ControlError {
            store: self.path.display().to_string(),
            message: format!("{what}: {e}"),
        }
    }

    /// One kept tenant's record.
    pub fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, ControlError> {
        self.read_json(TENANTS, tenant, "reading a tenant", "record")
    }

    /// The JSON `table` keeps under `tenant`; `reading` and `record` name it in errors.
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        tenant: &TenantId,
        reading: &str,
        record: &str,
    ) -> Result<Option<T>, ControlError> {
        let txn = self.db.begin_read().map_err(|e| self.fail(reading, e))?;
        let table = txn.open_table(table).map_err(|e| self.fail(reading, e))?;
        let Some(value) = table.get(tenant.as_str()).map_err(|e| self.fail(reading, e))? else {
            return Ok(None);
        };
        serde_json::from_slice(value.value())
            .map(Some)
            .map_err(|e| self.fail(&format!("tenant {tenant}'s {record} is unreadable"), e))
    }

    /// Makes the kept tenants exactly `tenants`, in one transaction: a copy
    /// of another store's.
    pub fn replace_tenants(&self, tenants: &[(TenantId, TenantRecord)]) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(|e| self.fail("writing tenants", e))?;
        {
            let mut table = txn.open_table(TENANTS).map_err(|e| self.fail("writing tenants", e))?;
            table
                .retain(|_, _| false)
                .map_err(|e| self.fail("writing tenants", e))?;
            for (tenant, record) in tenants {
                let json = serde_json::to_vec(record).map_err(|e| self.fail("encoding a tenant", e))?;
                table
                    .insert(tenant.as_str(), json.as_slice())
                    .map_err(|e| self.fail("writing tenants", e))?;
            }
        }
        txn.commit().map_err(|e| self.fail("writing tenants", e))
    }
}

impl ControlStore for FileControl {
    /// Stores a component under its digest (idempotent).
    fn put_component(&self, digest: &str, wasm: &[u8]) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(|e| self.fail("writing a component", e))?;
        {
            let mut table = txn
                .open_table(COMPONENTS)
                .map_err(|e| self.fail("writing a component", e))?;
            if table
                .get(digest)
                .map_err(|e| self.fail("writing a component", e))?
                .is_none()
            {
                table
                    .insert(digest, wasm)
                    .map_err(|e| self.fail("writing a component", e))?;
            }
        }
        txn.commit().map_err(|e| self.fail("writing a component", e))
    }

    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let txn = self.db.begin_read().map_err(|e| self.fail("reading a component", e))?;
        let table = txn
            .open_table(COMPONENTS)
            .map_err(|e| self.fail("reading a component", e))?;
        let bytes = table
            .get(digest)
            .map_err(|e| self.fail("reading a component", e))?
            .map(|v| v.value().to_vec());
        Ok(bytes)
    }

    fn policies(&self, tenant: &TenantId) -> Result<Option<PolicyRecord>, ControlError> {
        self.read_json(POLICIES, tenant, "reading policies", "policy record")
    }

    /// Every kept tenant, by id.
    fn tenants(&self) -> Result<Vec<(TenantId, TenantRecord)>, ControlError> {
        let txn = self.db.begin_read().map_err(|e| self.fail("reading tenants", e))?;
        let table = txn.open_table(TENANTS).map_err(|e| self.fail("reading tenants", e))?;
        let mut tenants = Vec::new();
        for entry in table.iter().map_err(|e| self.fail("reading tenants", e))? {
            let (key, value) = entry.map_err(|e| self.fail("reading tenants", e))?;
            let tenant = TenantId::new(key.value()).map_err(|e| self.fail("reading tenants", e))?;
            let record = serde_json::from_slice(value.value())
                .map_err(|e| self.fail(&format!("tenant {tenant}'s record is unreadable"), e))?;
            tenants.push((tenant, record));
        }
        Ok(tenants)
    }

    /// Writes a tenant's record whole (`None` forgets the tenant).
    fn put_tenant(&self, tenant: &TenantId, record: Option<&TenantRecord>) -> Result<(), ControlError> {
        let txn = self.db.begin_write().map_err(|e| self.fail("writing a tenant", e))?;
        {
            let mut table = txn.open_table(TENANTS).map_err(|e| self.fail("writing a tenant", e))?;
            match record {
                Some(record) => {
                    let json = serde_json::to_vec(record).map_err(|e| self.fail("encoding a tenant", e))?;
                    table
                        .insert(tenant.as_str(), json.as_slice())
                        .map_err(|e| self.fail("writing a tenant", e))?;
                }
                None => {
                    table
                        .remove(tenant.as_str())
                        .map_err(|e| self.fail("writing a tenant", e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.fail("writing a tenant", e))
    }

    /// Writes a tenant's record whole and drops components no record names.
    fn save_policies(&self, tenant: &TenantId, record: &PolicyRecord) -> Result<(), ControlError> {
        let json = serde_json::to_vec(record).map_err(|e| self.fail("encoding policies", e))?;
        let txn = self.db.begin_write().map_err(|e| self.fail("writing policies", e))?;
        {
            let mut policies = txn.open_table(POLICIES).map_err(|e| self.fail("writing policies", e))?;
            policies
                .insert(tenant.as_str(), json.as_slice())
                .map_err(|e| self.fail("writing policies", e))?;
            let mut named = BTreeSet::new();
            for entry in policies.iter().map_err(|e| self.fail("writing policies", e))? {
                let (_, value) = entry.map_err(|e| self.fail("writing policies", e))?;
                if let Ok(other) = serde_json::from_slice::<PolicyRecord>(value.value()) {
                    named.extend(other.versions.into_iter().map(|v| v.digest));
                }
            }
            let mut components = txn
                .open_table(COMPONENTS)
                .map_err(|e| self.fail("writing policies", e))?;
            let unnamed: Vec<String> = components
                .iter()
                .map_err(|e| self.fail("writing policies", e))?
                .filter_map(|entry| entry.ok().map(|(k, _)| k.value().to_owned()))
                .filter(|digest| !named.contains(digest))
                .collect();
            for digest in unnamed {
                components
                    .remove(digest.as_str())
                    .map_err(|e| self.fail("writing policies", e))?;
            }
        }
        txn.commit().map_err(|e| self.fail("writing policies", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{VersionRecord, seed_key};
    use crate::registry::version::PolicySettings;

    fn version(number: u32, digest: &str) -> VersionRecord {
        VersionRecord {
            number,
            digest: digest.into(),
            settings: PolicySettings::default(),
            source: "test".into(),
            created_at_ms: 1,
        }
    }

    #[test]
    fn records_survive_reopening_and_unnamed_components_are_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("control.redb");
        let acme = TenantId::new("acme").expect("id");
        {
            let store = FileControl::open(&path).expect("open");
            store.put_component("aaa", b"one").expect("put");
            store.put_component("bbb", b"two").expect("put");
            let record = PolicyRecord {
                versions: vec![version(1, "aaa"), version(2, "bbb")],
                activations: vec![1, 2],
                shadow: None,
                last_number: 2,
                seed: Some("seed".into()),
            };
            store.save_policies(&acme, &record).expect("save");
            // Version 1 goes: its component goes with it.
            let record = PolicyRecord {
                versions: vec![version(2, "bbb")],
                activations: vec![2],
                ..record
            };
            store.save_policies(&acme, &record).expect("save");
        }
        let store = FileControl::open(&path).expect("reopen");
        let record = store.policies(&acme).expect("read").expect("a record");
        assert_eq!(record.active(), Some(2));
        assert_eq!(record.versions.len(), 1);
        assert_eq!(store.component("bbb").expect("read").as_deref(), Some(&b"two"[..]));
        assert_eq!(store.component("aaa").expect("read"), None);
        assert!(
            store
                .policies(&TenantId::new("other").expect("id"))
                .expect("read")
                .is_none()
        );
    }

    #[test]
    fn replacing_the_tenants_leaves_exactly_those_given() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FileControl::open(&dir.path().join("copy.redb")).expect("open");
        let record = |dollars| TenantRecord {
            tier: "standard".into(),
            limits: crate::ledger::TenantLimits::monthly(crate::money::NanoUsd::from_usd(dollars)),
            disabled: false,
            allow_costlier_downgrade: false,
            inference_profiles: Default::default(),
            api_keys: Vec::new(),
            access_keys: Vec::new(),
            seed: None,
        };
        let (acme, globex) = (TenantId::new("acme").expect("id"), TenantId::new("globex").expect("id"));
        store.put_tenant(&acme, Some(&record(1))).expect("put");
        store.put_tenant(&globex, Some(&record(2))).expect("put");
        store.replace_tenants(&[(acme.clone(), record(3))]).expect("replace");
        assert_eq!(store.tenants().expect("read"), vec![(acme.clone(), record(3))]);
        assert_eq!(store.tenant(&acme).expect("read"), Some(record(3)));
        assert_eq!(store.tenant(&globex).expect("read"), None);
        store.replace_tenants(&[]).expect("replace");
        assert!(store.tenants().expect("read").is_empty());
    }

    #[test]
    fn the_seed_key_changes_with_the_component_or_the_settings() {
        let settings = PolicySettings::default();
        let key = seed_key("aaa", &settings);
        assert_eq!(key, seed_key("aaa", &settings));
        assert_ne!(key, seed_key("bbb", &settings));
        let stricter = PolicySettings {
            deadline_ms: 7,
            ..PolicySettings::default()
        };
        assert_ne!(key, seed_key("aaa", &stricter));
    }
}

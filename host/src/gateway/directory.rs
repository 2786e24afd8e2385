//! The gateway's tenants: who they are (profiles) and how they sign in
//! (credentials), changed at runtime through the admin API.
//!
//! Invariants:
//! - The request path reads one immutable snapshot without locks
//!   (`arc-swap`); a change builds a whole new snapshot and swaps it in, so
//!   a call never sees a half-applied change.
//! - Changes are serialised. A change is checked by building the new
//!   snapshot (keys unique across tenants, well formed), then kept (the
//!   caller's `keep`, e.g. the control store), and only then swapped in:
//!   a refused or unsaved change changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::auth::{Credentials, CredentialsError};
use super::service::TenantProfile;
use crate::control::TenantRecord;
use crate::ids::TenantId;
use crate::registry::cases::CasesFile;

/// What the request path reads.
pub struct Entries {
    pub profiles: HashMap<TenantId, Arc<TenantProfile>>,
    pub credentials: Credentials,
}

pub struct Directory {
    current: ArcSwap<Entries>,
    writer: Mutex<Books>,
}

/// The records the snapshot is built from, and each configured tenant's
/// policy cases (a file's, so they stay with the configuration).
struct Books {
    records: BTreeMap<TenantId, TenantRecord>,
    cases: HashMap<TenantId, Arc<CasesFile>>,
}

/// Why a change was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("{0}")]
    Refused(String),
    #[error("the change was not saved, so it was not applied: {0}")]
    NotKept(String),
}

impl Directory {
    pub fn new(
        records: BTreeMap<TenantId, TenantRecord>,
        cases: HashMap<TenantId, Arc<CasesFile>>,
    ) -> Result<Directory, DirectoryError> {
        let books = Books { records, cases };
        let entries = books.entries()?;
        Ok(Directory {
            current: ArcSwap::from_pointee(entries),
            writer: Mutex::new(books),
        })
    }

    /// The snapshot calls are served from.
    pub fn entries(&self) -> arc_swap::Guard<Arc<Entries>> {
        self.current.load()
    }

    pub fn profile(&self, tenant: &TenantId) -> Option<Arc<TenantProfile>> {
        self.current.load().profiles.get(tenant).cloned()
    }

    /// Every tenant, sorted.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut ids: Vec<TenantId> = self.current.load().profiles.keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn record(&self, tenant: &TenantId) -> Option<TenantRecord> {
        self.books().records.get(tenant).cloned()
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes one tenant: `change` gets its record (`None`: no such
    /// tenant) and returns the new one; `keep` saves it before it applies.
    pub fn update(
        &self,
        tenant: &TenantId,
        change: impl FnOnce(Option<&TenantRecord>) -> Result<TenantRecord, String>,
        keep: impl FnOnce(&TenantRecord) -> Result<(), String>,
    ) -> Result<TenantRecord, DirectoryError> {
        let mut books = self.books();
        let next = change(books.records.get(tenant)).map_err(DirectoryError::Refused)?;
        let previous = books.records.insert(tenant.clone(), next.clone());
        let built = books.entries();
        let entries = match built {
            Ok(entries) => entries,
            Err(e) => {
                restore(&mut books.records, tenant, previous);
                return Err(e);
            }
        };
        if let Err(why) = keep(&next) {
            restore(&mut books.records, tenant, previous);
            return Err(DirectoryError::NotKept(why));
        }
        self.current.store(Arc::new(entries));
        Ok(next)
    }
}

fn restore(records: &mut BTreeMap<TenantId, TenantRecord>, tenant: &TenantId, previous: Option<TenantRecord>) {
    match previous {
        Some(previous) => records.insert(tenant.clone(), previous),
        None => records.remove(tenant),
    };
}

impl Books {
    fn entries(&self) -> Result<Entries, DirectoryError> {
        let mut credentials = Credentials::new();
        let mut profiles = HashMap::new();
        for (tenant, record) in &self.records {
            for key in &record.api_keys {
                credentials.add_bearer_key_sha256(tenant, &key.sha256)?;
            }
            for key in &record.access_keys {
                credentials.add_access_key(tenant, &key.access_key_id, &key.secret_access_key)?;
            }
            profiles.insert(
                tenant.clone(),
                Arc::new(TenantProfile {
                    tier: record.tier.clone(),
                    inference_profiles: record.inference_profiles.clone().into_iter().collect(),
                    allow_costlier_downgrade: record.allow_costlier_downgrade,
                    policy_cases: self.cases.get(tenant).cloned(),
                    disabled: record.disabled,
                }),
            );
        }
        Ok(Entries { profiles, credentials })
    }
}

//! `[control]`: where runtime changes (policy versions uploaded, activated
//! or shadowed through the admin API) are kept across restarts.

use std::path::PathBuf;

use serde::Deserialize;

use super::StoreKind;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `durable` keeps runtime changes in `path`; `memory` forgets them at
    /// exit, and every start begins from `tollgate.toml` alone; `redis`
    /// shares them with every replica through `[ledger.redis]`. Unset, it
    /// is the ledger's: books and the tenants they belong to live alike.
    pub store: Option<StoreKind>,
    /// Unset: `control.redb` beside the ledger's file.
    pub path: Option<PathBuf>,
}

/// Where runtime changes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlace {
    /// Nowhere: every start begins from `tollgate.toml` alone.
    Memory,
    /// One gateway's redb file.
    File(PathBuf),
    /// Redis, at `[ledger.redis]`, shared by every replica.
    Redis,
}

impl ControlConfig {
    /// Where runtime changes are kept, given the ledger's settings.
    pub fn place(&self, ledger: &super::LedgerConfig) -> ControlPlace {
        match self.store.unwrap_or(ledger.store) {
            StoreKind::Memory => ControlPlace::Memory,
            StoreKind::Redis => ControlPlace::Redis,
            StoreKind::Durable => ControlPlace::File(self.path.clone().unwrap_or_else(|| {
                ledger
                    .path
                    .parent()
                    .map_or_else(|| PathBuf::from("control.redb"), |dir| dir.join("control.redb"))
            })),
        }
    }
}

//! `[control]`: where runtime changes (policy versions uploaded, activated
//! or shadowed through the admin API) are kept across restarts.

use std::path::PathBuf;

use serde::Deserialize;

use super::StoreKind;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `durable` keeps runtime changes in `path`; `memory` forgets them at
    /// exit, and every start begins from `tollgate.toml` alone. Unset, it
    /// is the ledger's: books and the tenants they belong to live alike.
    pub store: Option<StoreKind>,
    /// Unset: `control.redb` beside the ledger's file.
    pub path: Option<PathBuf>,
}

impl ControlConfig {
    /// Where runtime changes are kept, if anywhere, given the ledger's settings.
    pub fn resolved(&self, ledger: &super::LedgerConfig) -> Option<PathBuf> {
        match self.store.unwrap_or(ledger.store) {
            StoreKind::Memory => None,
            // Until the fleet's registry lives in Redis, each replica keeps its own.
            StoreKind::Durable | StoreKind::Redis => Some(self.path.clone().unwrap_or_else(|| {
                ledger
                    .path
                    .parent()
                    .map_or_else(|| PathBuf::from("control.redb"), |dir| dir.join("control.redb"))
            })),
        }
    }
}

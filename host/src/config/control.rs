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
    /// With `durable`, the store itself; with `redis`, this replica's local
    /// copy of the fleet's state, which lets it start while Redis does not
    /// answer (one per replica). Unset: `control.redb`, or
    /// `control-copy.redb` with `redis`, beside the ledger's file.
    pub path: Option<PathBuf>,
}

/// Where runtime changes are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlace {
    /// Nowhere: every start begins from `tollgate.toml` alone.
    Memory,
    /// One gateway's redb file.
    File(PathBuf),
    /// Redis, at `[ledger.redis]`, shared by every replica; this replica's
    /// copy of it in a redb file.
    Redis { copy: PathBuf },
}

impl ControlConfig {
    /// Where runtime changes are kept, given the ledger's settings.
    pub fn place(&self, ledger: &super::LedgerConfig) -> ControlPlace {
        let beside_ledger = |name: &str| {
            self.path.clone().unwrap_or_else(|| {
                ledger
                    .path
                    .parent()
                    .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
            })
        };
        match self.store.unwrap_or(ledger.store) {
            StoreKind::Memory => ControlPlace::Memory,
            StoreKind::Redis => ControlPlace::Redis {
                copy: beside_ledger("control-copy.redb"),
            },
            StoreKind::Durable => ControlPlace::File(beside_ledger("control.redb")),
        }
    }
}

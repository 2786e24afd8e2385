//! `[control]`: where runtime changes (policy versions uploaded, activated
//! or shadowed through the admin API) are kept across restarts.

use std::path::PathBuf;

use serde::Deserialize;

use super::StoreKind;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ControlConfig {
    /// `durable` keeps runtime changes in `path`; `memory` forgets them at
    /// exit, and every start begins from `tollgate.toml` alone.
    pub store: StoreKind,
    pub path: PathBuf,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            store: StoreKind::Durable,
            path: PathBuf::from("tollgate-data/control.redb"),
        }
    }
}

//! The price book a replay prices by: the gateway's own (embedded catalog,
//! the configured overrides, the tenants' inference profiles), in the
//! region each record was priced in.

use std::sync::Arc;

use anyhow::{Context, Result};
use tollgate_host::Catalog;
use tollgate_host::config::{Config, UpstreamKind};
use tollgate_host::gateway::app::price_book;
use tollgate_host::pricing::RegionalCatalogs;

pub struct Prices {
    /// Based in the gateway's region: that of records that name none (refused calls).
    catalogs: RegionalCatalogs,
}

impl Prices {
    /// `region`: the upstream's region, when not the configured one.
    pub fn new(config: &Config, region: Option<&str>) -> Result<Prices> {
        let book = price_book(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let region = region.map(str::to_owned).or_else(|| match config.upstream.kind {
            UpstreamKind::Bedrock => config.upstream.bedrock.region.clone(),
            // The mock is priced as the catalog's first region, as the gateway does.
            UpstreamKind::Mock => None,
        });
        let default = match region {
            Some(region) => book.in_region(&region).with_context(|| format!("region {region}"))?,
            None => book,
        };
        Ok(Prices {
            catalogs: RegionalCatalogs::new(default),
        })
    }

    /// The catalog of the gateway's region, for the policy's price look-ups.
    pub fn default_catalog(&self) -> Arc<Catalog> {
        Arc::clone(self.catalogs.base())
    }

    /// The catalog of `region` (the default one for `None`).
    pub fn for_region(&mut self, region: Option<&str>) -> Result<&Catalog, String> {
        self.catalogs.get(region)
    }
}

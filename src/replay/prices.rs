//! The price book a replay prices by: the gateway's own (embedded catalog,
//! the configured overrides, the tenants' inference profiles), in the
//! region each record was priced in.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use tollgate_host::Catalog;
use tollgate_host::config::{Config, UpstreamKind};
use tollgate_host::gateway::app::price_book;

pub struct Prices {
    /// The region of records that name none (refused calls): the gateway's.
    default: Arc<Catalog>,
    regional: HashMap<String, Result<Catalog, String>>,
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
            default: Arc::new(default),
            regional: HashMap::new(),
        })
    }

    /// The catalog of the gateway's region, for the policy's price look-ups.
    pub fn default_catalog(&self) -> Arc<Catalog> {
        Arc::clone(&self.default)
    }

    /// The catalog of `region` (the default one for `None`).
    pub fn for_region(&mut self, region: Option<&str>) -> Result<&Catalog, String> {
        let Some(region) = region.filter(|r| *r != self.default.region()) else {
            return Ok(&self.default);
        };
        if !self.regional.contains_key(region) {
            let catalog = Catalog::clone(&self.default)
                .in_region(region)
                .map_err(|e| format!("region {region}: {e}"));
            self.regional.insert(region.to_owned(), catalog);
        }
        match &self.regional[region] {
            Ok(catalog) => Ok(catalog),
            Err(e) => Err(e.clone()),
        }
    }
}

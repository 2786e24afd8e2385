//! One catalog per region, built on first use: AWS bills a call by the
//! region it was sent to, so a log's records are each priced in their own.

use std::collections::HashMap;
use std::sync::Arc;

use super::Catalog;

pub struct RegionalCatalogs {
    base: Arc<Catalog>,
    built: HashMap<String, Result<Catalog, String>>,
}

impl RegionalCatalogs {
    pub fn new(base: Catalog) -> RegionalCatalogs {
        RegionalCatalogs {
            base: Arc::new(base),
            built: HashMap::new(),
        }
    }

    /// The catalog in its own region.
    pub fn base(&self) -> &Arc<Catalog> {
        &self.base
    }

    /// The catalog of `region` (the base one for `None`), or why that
    /// region has no prices.
    pub fn get(&mut self, region: Option<&str>) -> Result<&Catalog, String> {
        let Some(region) = region.filter(|r| *r != self.base.region()) else {
            return Ok(&self.base);
        };
        if !self.built.contains_key(region) {
            let catalog = Catalog::clone(&self.base)
                .in_region(region)
                .map_err(|e| format!("region {region}: {e}"));
            self.built.insert(region.to_owned(), catalog);
        }
        self.built[region].as_ref().map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_region_is_built_once_and_unknown_ones_say_why() {
        let mut catalogs = RegionalCatalogs::new(Catalog::embedded());
        let home = catalogs.base().region().to_owned();
        assert_eq!(catalogs.get(None).expect("base").region(), home);
        assert_eq!(catalogs.get(Some(&home)).expect("base").region(), home);
        assert_eq!(
            catalogs.get(Some("eu-central-1")).expect("priced").region(),
            "eu-central-1"
        );
        let err = catalogs.get(Some("mars-north-1")).expect_err("no prices there");
        assert!(err.contains("mars-north-1"), "{err}");
        assert_eq!(catalogs.built.len(), 2);
    }
}

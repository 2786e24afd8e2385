//! Prices for the calls a report must price itself: Bedrock's records, and
//! the model a downgraded call asked for. AWS bills by the region a call was
//! sent to, so each record is priced in its own region, with one price book
//! per region built on first use.

use tollgate_host::pricing::{Catalog, Metered, RegionalCatalogs};

pub struct Prices {
    catalogs: RegionalCatalogs,
}

impl Prices {
    pub fn new(base: Catalog) -> Prices {
        Prices {
            catalogs: RegionalCatalogs::new(base),
        }
    }

    /// The charge of `metered` on `model` in `region` (the catalog's own
    /// region when `None`), in nano-dollars, or why it has no price.
    pub fn charge(&mut self, region: Option<&str>, model: &str, metered: &Metered) -> Result<u64, String> {
        self.catalogs
            .get(region)?
            .charge(model, metered)
            .map(|c| c.cost.get())
            .map_err(|e| e.to_string())
    }
}

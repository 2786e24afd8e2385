//! Prices for the calls a report must price itself: Bedrock's records, and
//! the model a downgraded call asked for. AWS bills by the region a call was
//! sent to, so each record is priced in its own region, with one price book
//! per region built on first use.

use std::collections::HashMap;

use tollgate_host::pricing::{Catalog, Metered};

pub struct Prices {
    base: Catalog,
    regional: HashMap<String, Result<Catalog, String>>,
}

impl Prices {
    pub fn new(base: Catalog) -> Prices {
        Prices {
            base,
            regional: HashMap::new(),
        }
    }

    /// The charge of `metered` on `model` in `region` (the catalog's own
    /// region when `None`), in nano-dollars, or why it has no price.
    pub fn charge(&mut self, region: Option<&str>, model: &str, metered: &Metered) -> Result<u64, String> {
        let book = match region {
            Some(region) if region != self.base.region() => {
                if !self.regional.contains_key(region) {
                    let book = self.base.clone().in_region(region).map_err(|e| e.to_string());
                    self.regional.insert(region.to_owned(), book);
                }
                match &self.regional[region] {
                    Ok(book) => book,
                    Err(why) => return Err(why.clone()),
                }
            }
            _ => &self.base,
        };
        book.charge(model, metered)
            .map(|c| c.cost.get())
            .map_err(|e| e.to_string())
    }
}

//! A pricing file as written (the embedded catalog, or an operator's
//! override): its schema, prices that must be exact (strings of dollars or
//! integers of nano-dollars, never floats), and errors that name the line
//! and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::money::NanoUsd;

/// Where the file schema is explained, for error messages.
pub(super) const SCHEMA_HINT: &str =
    "the schema is described at the top of tollgate's embedded catalog, host/src/pricing/catalog.toml";

/// Where the catalog's prices come from, as its `[meta]` table says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogMeta {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub as_of: String,
}

/// A pricing file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read pricing file {}: {source}; check the pricing file path in tollgate's config", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("pricing file {origin}{}: {problem} ({SCHEMA_HINT})", at_key(.line, .key))]
    Schema {
        origin: String,
        /// The TOML key path, e.g. `models."amazon.nova-micro-v1:0".inptu`.
        key: String,
        line: Option<usize>,
        problem: String,
    },
    #[error("pricing file {origin}: {problem}")]
    Invalid { origin: String, problem: String },
}

fn at_key(line: &Option<usize>, key: &str) -> String {
    match (line, key.is_empty()) {
        (Some(line), false) => format!(", line {line}, at `{key}`"),
        (Some(line), true) => format!(", line {line}"),
        (None, false) => format!(", at `{key}`"),
        (None, true) => String::new(),
    }
}

/// A pricing file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogFile {
    #[serde(default)]
    pub(super) meta: Option<CatalogMeta>,
    #[serde(default)]
    pub(super) prefix_premium_bp: BTreeMap<String, u32>,
    #[serde(default)]
    pub(super) application_profiles: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) models: BTreeMap<String, ModelEntry>,
    /// Regions whose prices are the `[models]` table's as written.
    #[serde(default)]
    pub(super) base_regions: Option<Vec<String>>,
    /// Service tier -> basis points of the standard price (17500 = 1.75x).
    #[serde(default)]
    pub(super) service_tier_bp: BTreeMap<String, u32>,
    /// Other regions: a premium over the base prices, and entries of their own.
    #[serde(default)]
    pub(super) regions: BTreeMap<String, RegionEntry>,
}

/// One region's prices as written: models it lists replace the base entry
/// whole; every other model costs the base price plus `premium_bp`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegionEntry {
    #[serde(default)]
    pub(super) premium_bp: u32,
    #[serde(default)]
    pub(super) models: BTreeMap<String, ModelEntry>,
}

/// One model's prices as written; see the catalog header for defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelEntry {
    #[serde(default)]
    pub(super) name: Option<String>,
    pub(super) input: PerMillion,
    pub(super) output: PerMillion,
    #[serde(default)]
    pub(super) cache_read: Option<PerMillion>,
    #[serde(default)]
    pub(super) cache_write_5m: Option<PerMillion>,
    #[serde(default)]
    pub(super) cache_write_1h: Option<PerMillion>,
    #[serde(default)]
    pub(super) prefix_premium_bp: BTreeMap<String, u32>,
    /// Prices for the whole call when its prompt passes a size.
    #[serde(default)]
    pub(super) long_context: Option<LongContextEntry>,
    /// Prices of latency-optimized inference, where the model offers it.
    #[serde(default)]
    pub(super) latency_optimized: Option<TierEntry>,
    /// Overrides `[service_tier_bp]` for this model.
    #[serde(default)]
    pub(super) service_tier_bp: BTreeMap<String, u32>,
}

/// A set of prices beside a model's standard ones. A missing cache price is
/// the model's standard one scaled like the input price, rounded up.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TierEntry {
    pub(super) input: PerMillion,
    pub(super) output: PerMillion,
    #[serde(default)]
    pub(super) cache_read: Option<PerMillion>,
    #[serde(default)]
    pub(super) cache_write_5m: Option<PerMillion>,
    #[serde(default)]
    pub(super) cache_write_1h: Option<PerMillion>,
}

/// The long-context tier: once a call's prompt (input, cache reads and cache
/// writes) passes `above_input_tokens`, every token of it is billed here.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LongContextEntry {
    pub(super) above_input_tokens: u64,
    pub(super) input: PerMillion,
    pub(super) output: PerMillion,
    #[serde(default)]
    pub(super) cache_read: Option<PerMillion>,
    #[serde(default)]
    pub(super) cache_write_5m: Option<PerMillion>,
    #[serde(default)]
    pub(super) cache_write_1h: Option<PerMillion>,
}

impl LongContextEntry {
    pub(super) fn prices(&self) -> TierEntry {
        TierEntry {
            input: self.input,
            output: self.output,
            cache_read: self.cache_read,
            cache_write_5m: self.cache_write_5m,
            cache_write_1h: self.cache_write_1h,
        }
    }
}

/// A price per million tokens: a string of US dollars ("3.00", "$0.035") or
/// an integer of nano-dollars. Floats are refused: they are not exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PerMillion(pub(super) NanoUsd);

const PRICE_EXPECTED: &str =
    "a price per million tokens: US dollars as a string (\"3.00\") or nano-dollars as an integer (3_000_000_000)";

impl<'de> Deserialize<'de> for PerMillion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PriceVisitor;
        impl Visitor<'_> for PriceVisitor {
            type Value = PerMillion;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PRICE_EXPECTED)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PerMillion, E> {
                Ok(PerMillion(NanoUsd(v)))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PerMillion, E> {
                u64::try_from(v)
                    .map(|v| PerMillion(NanoUsd(v)))
                    .map_err(|_| E::custom(format!("price {v} is negative; expected {PRICE_EXPECTED}")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<PerMillion, E> {
                Err(E::custom(format!(
                    "price {v} is a float, which is not exact; write it as a string, \"{v}\", or as an integer of \
                     nano-dollars"
                )))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PerMillion, E> {
                NanoUsd::parse_usd(v)
                    .map(PerMillion)
                    .ok_or_else(|| E::custom(format!("price {v:?} is not {PRICE_EXPECTED}, with at most 9 decimals")))
            }
        }
        deserializer.deserialize_any(PriceVisitor)
    }
}

pub(super) fn parse_file(text: &str, origin: &str) -> Result<CatalogFile, CatalogError> {
    let schema_error = |key: String, err: &toml::de::Error| CatalogError::Schema {
        origin: origin.to_owned(),
        key,
        line: err.span().map(|span| crate::toml_error::line_of(text, span.start)),
        problem: err.message().trim().to_owned(),
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| schema_error(String::new(), &e))?;
    serde_path_to_error::deserialize(deserializer)
        .map_err(|e| schema_error(crate::toml_error::key_path(e.path()), e.inner()))
}

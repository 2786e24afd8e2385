//! Model prices: what a Bedrock call costs.
//!
//! Invariants: money is integer nano-dollars, a price is nano-dollars per
//! million tokens, every cost rounds up (once, over the sum of all parts), and
//! a model without a price is an [`UnknownModel`] error, never a silent zero.
//!
//! A [`Catalog`] is immutable once built; share it behind `Arc`. It starts
//! from the embedded catalog (`pricing/catalog.toml`, whose header states the
//! source and date of its prices and the file schema); a pricing file named in
//! tollgate's config overrides or extends it, and is checked whole at load so
//! nothing about it fails at request time. A model id resolves, in order:
//! configured application-inference-profile ARN → other Bedrock ARNs by their
//! structure → exact catalog entry → inference-profile prefix (`us.`,
//! `global.`, …) plus base model, with that prefix's premium.
//!
//! The engine asks a [`PriceBook`]; both [`Catalog`] and the fixed table
//! [`StaticPrices`] (tests, examples) are one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::contract::ModelPrice;
pub use crate::ids::{REGION_PREFIXES, split_region_prefix};
use crate::money::NanoUsd;

/// Looks up the on-demand price of a model id. Called on the decision path,
/// so it must be cheap and must not block.
pub trait PriceBook: Send + Sync + 'static {
    /// Nano-dollars per million tokens, or `None` for an unknown model.
    fn price(&self, model_id: &str) -> Option<ModelPrice>;
}

/// A premium above +100% is far more likely a typo than an AWS price.
const MAX_PREMIUM_BP: u32 = 10_000;
const BP_PER_UNIT: u128 = 10_000;
const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;

/// Where the file schema is explained, for error messages.
const SCHEMA_HINT: &str =
    "the schema is described at the top of tollgate's embedded catalog, host/src/pricing/catalog.toml";

static EMBEDDED_CATALOG: &str = include_str!("pricing/catalog.toml");

/// Token counts of one call, as Bedrock reports them in `usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// `inputTokens`: input that was neither read from nor written to a cache.
    pub input_tokens: u64,
    /// `outputTokens`.
    pub output_tokens: u64,
    /// `cacheReadInputTokens`.
    pub cache_read_input_tokens: u64,
    /// `cacheWriteInputTokens`: all cache writes, whatever their TTL.
    pub cache_write_input_tokens: u64,
    /// How many of `cache_write_input_tokens` were written with a 1-hour TTL;
    /// the rest count at the 5-minute price. 0 when the split is not known.
    pub cache_write_1h_input_tokens: u64,
}

impl Usage {
    /// Reads a Converse response's `usage` object. Missing or malformed
    /// fields count as 0: the response has already been paid for, and what
    /// it does report must still be charged.
    pub fn from_converse(usage: &serde_json::Value) -> Usage {
        let field = |name: &str| usage.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
        Usage {
            input_tokens: field("inputTokens"),
            output_tokens: field("outputTokens"),
            cache_read_input_tokens: field("cacheReadInputTokens"),
            cache_write_input_tokens: field("cacheWriteInputTokens"),
            cache_write_1h_input_tokens: 0,
        }
    }

    /// Every prompt token the model read, cached or not: what an input
    /// estimate should be compared with (`inputTokens` alone excludes cache
    /// reads and writes).
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_write_input_tokens.max(self.cache_write_1h_input_tokens))
    }
}

/// A model's effective prices, nano-dollars per million tokens, with the
/// catalog's defaults filled in and any prefix premium applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Price {
    pub input: NanoUsd,
    pub output: NanoUsd,
    pub cache_read: NanoUsd,
    pub cache_write_5m: NanoUsd,
    pub cache_write_1h: NanoUsd,
}

impl Price {
    /// The cost of `usage`, rounded up once over the sum of all parts so that
    /// fractions of a nano-dollar are not rounded up five times.
    pub fn cost(&self, usage: &Usage) -> NanoUsd {
        let write_1h = usage.cache_write_1h_input_tokens;
        // A 1h count above the total is inconsistent; charging it whole at the
        // dearer 1h price never undercharges.
        let write_5m = usage.cache_write_input_tokens.saturating_sub(write_1h);
        let parts = [
            (usage.input_tokens, self.input),
            (usage.output_tokens, self.output),
            (usage.cache_read_input_tokens, self.cache_read),
            (write_5m, self.cache_write_5m),
            (write_1h, self.cache_write_1h),
        ];
        let sum = parts
            .iter()
            .map(|&(tokens, price)| u128::from(tokens) * u128::from(price.get()))
            .fold(0u128, u128::saturating_add);
        NanoUsd(u64::try_from(sum.div_ceil(TOKENS_PER_PRICE_UNIT)).unwrap_or(u64::MAX))
    }

    /// Every price raised by `bp` basis points, each rounded up.
    fn with_premium(self, bp: u32) -> Price {
        if bp == 0 {
            return self;
        }
        let raise = |p: NanoUsd| {
            let raised = (u128::from(p.get()) * (BP_PER_UNIT + u128::from(bp))).div_ceil(BP_PER_UNIT);
            NanoUsd(u64::try_from(raised).unwrap_or(u64::MAX))
        };
        Price {
            input: raise(self.input),
            output: raise(self.output),
            cache_read: raise(self.cache_read),
            cache_write_5m: raise(self.cache_write_5m),
            cache_write_1h: raise(self.cache_write_1h),
        }
    }
}

impl From<Price> for ModelPrice {
    /// Policies see one cache-write price: the 5-minute one, Bedrock's default TTL.
    fn from(p: Price) -> Self {
        ModelPrice {
            input: p.input.get(),
            output: p.output.get(),
            cache_read: p.cache_read.get(),
            cache_write: p.cache_write_5m.get(),
        }
    }
}

/// What a model id resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved<'c> {
    /// The catalog entry that priced it.
    pub base_model: &'c str,
    /// The display name of that entry, if the catalog gives one.
    pub name: Option<&'c str>,
    /// The inference-profile prefix, if the id had one.
    pub prefix: Option<&'static str>,
    /// The premium applied for that prefix, in basis points.
    pub premium_bp: u32,
    pub price: Price,
}

/// Where the catalog's prices come from, as its `[meta]` table says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogMeta {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub as_of: String,
}

/// Bedrock model prices: the embedded catalog plus the operator's overrides.
#[derive(Clone, Debug)]
pub struct Catalog {
    meta: CatalogMeta,
    prefix_premium_bp: BTreeMap<String, u32>,
    application_profiles: BTreeMap<String, String>,
    models: BTreeMap<String, ModelEntry>,
}

impl Catalog {
    /// The embedded default catalog.
    pub fn embedded() -> Catalog {
        // The embedded file is ours, not outside input, and a unit test parses it.
        Catalog::empty()
            .with_overrides_str(EMBEDDED_CATALOG, "(embedded catalog)")
            .expect("the embedded catalog is valid")
    }

    /// A catalog with no prices, for embedders who bring every price themselves.
    pub fn empty() -> Catalog {
        Catalog {
            meta: CatalogMeta::default(),
            prefix_premium_bp: BTreeMap::new(),
            application_profiles: BTreeMap::new(),
            models: BTreeMap::new(),
        }
    }

    /// Applies the pricing file at `path` (same schema as the embedded
    /// catalog): its models replace or add whole entries, its prefix premiums
    /// and application profiles replace or add single keys.
    pub fn with_overrides(self, path: impl AsRef<Path>) -> Result<Catalog, CatalogError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.with_overrides_str(&text, &path.display().to_string())
    }

    /// [`Catalog::with_overrides`] from text; `origin` names it in errors.
    pub fn with_overrides_str(mut self, toml_text: &str, origin: &str) -> Result<Catalog, CatalogError> {
        let file = parse_file(toml_text, origin)?;
        if let Some(meta) = file.meta {
            self.meta = meta;
        }
        self.prefix_premium_bp.extend(file.prefix_premium_bp);
        self.application_profiles.extend(file.application_profiles);
        self.models.extend(file.models);
        self.validate().map_err(|problem| CatalogError::Invalid {
            origin: origin.to_owned(),
            problem,
        })?;
        Ok(self)
    }

    /// Maps an application inference profile ARN to the model (or system
    /// inference profile) it was created from, e.g. from tenant configuration.
    pub fn with_application_profile(mut self, arn: &str, model_id: &str) -> Result<Catalog, CatalogError> {
        self.application_profiles.insert(arn.to_owned(), model_id.to_owned());
        self.validate().map_err(|problem| CatalogError::Invalid {
            origin: "application profile configuration".to_owned(),
            problem,
        })?;
        Ok(self)
    }

    pub fn meta(&self) -> &CatalogMeta {
        &self.meta
    }

    /// The ids of every priced model, sorted.
    pub fn model_ids(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Resolves any id a Bedrock call may name to its base model and price.
    pub fn resolve(&self, model_id: &str) -> Result<Resolved<'_>, UnknownModel> {
        match self.application_profiles.get(model_id) {
            // Targets are checked at load; an error here still names the ARN.
            Some(target) => self.resolve_id(target).map_err(|_| UnknownModel::profile(model_id)),
            None => self.resolve_id(model_id),
        }
    }

    /// The cost of a call that reported `usage`, rounded up.
    pub fn cost(&self, model_id: &str, usage: &Usage) -> Result<NanoUsd, UnknownModel> {
        Ok(self.resolve(model_id)?.price.cost(usage))
    }

    /// What to reserve for a call: every input token at the input price and
    /// `max_output_tokens` of output. Requests with cache points need
    /// [`Catalog::worst_case_caching`].
    pub fn worst_case(
        &self,
        model_id: &str,
        input_tokens: u64,
        max_output_tokens: u64,
    ) -> Result<NanoUsd, UnknownModel> {
        let usage = Usage {
            input_tokens,
            output_tokens: max_output_tokens,
            ..Usage::default()
        };
        self.cost(model_id, &usage)
    }

    /// [`Catalog::worst_case`] for a request with cache points: its input may
    /// be billed as cache writes, which cost more than plain input.
    pub fn worst_case_caching(
        &self,
        model_id: &str,
        input_tokens: u64,
        max_output_tokens: u64,
    ) -> Result<NanoUsd, UnknownModel> {
        let price = self.resolve(model_id)?.price;
        let dearest = price.input.max(price.cache_write_5m).max(price.cache_write_1h);
        let usage = Usage {
            input_tokens,
            output_tokens: max_output_tokens,
            ..Usage::default()
        };
        Ok(Price {
            input: dearest,
            ..price
        }
        .cost(&usage))
    }

    fn resolve_id(&self, model_id: &str) -> Result<Resolved<'_>, UnknownModel> {
        let id = match Arn::parse(model_id) {
            None => model_id,
            Some(arn) => match arn.resource_type {
                "foundation-model" | "inference-profile" => arn.resource_id,
                "application-inference-profile" => return Err(UnknownModel::profile(model_id)),
                _ => return Err(UnknownModel::model(model_id, arn.resource_id)),
            },
        };
        // An exact entry wins, so an operator may price one profile id on its own.
        if let Some((key, entry)) = self.models.get_key_value(id) {
            return Ok(entry.resolved(key, None, 0));
        }
        let (prefix, base) = split_region_prefix(id);
        if let Some(prefix) = prefix
            && let Some((key, entry)) = self.models.get_key_value(base)
        {
            let bp = entry
                .prefix_premium_bp
                .get(prefix)
                .or_else(|| self.prefix_premium_bp.get(prefix))
                .copied()
                .unwrap_or(0);
            return Ok(entry.resolved(key, Some(prefix), bp));
        }
        Err(UnknownModel::model(model_id, base))
    }

    /// Checks the merged catalog, so that no bad entry fails at request time.
    fn validate(&self) -> Result<(), String> {
        let check_prefixes = |table: &BTreeMap<String, u32>, at: &str| -> Result<(), String> {
            for (prefix, &bp) in table {
                if !REGION_PREFIXES.contains(&prefix.as_str()) {
                    return Err(format!(
                        "{at} names unknown inference-profile prefix {prefix:?}; known prefixes are {}",
                        REGION_PREFIXES.join(", ")
                    ));
                }
                if bp > MAX_PREMIUM_BP {
                    return Err(format!(
                        "{at}.{prefix} = {bp} basis points is above the {MAX_PREMIUM_BP} (+100%) allowed; \
                         1000 basis points is +10%"
                    ));
                }
            }
            Ok(())
        };
        check_prefixes(&self.prefix_premium_bp, "[prefix_premium_bp]")?;
        for (id, entry) in &self.models {
            if id.is_empty() || id.starts_with("arn:") {
                return Err(format!(
                    "[models.{id:?}]: a model entry needs a Bedrock model id such as \
                     \"anthropic.claude-sonnet-4-20250514-v1:0\"; map ARNs under [application_profiles]"
                ));
            }
            check_prefixes(&entry.prefix_premium_bp, &format!("[models.{id:?}].prefix_premium_bp"))?;
        }
        for (arn, target) in &self.application_profiles {
            let well_formed = Arn::parse(arn).is_some_and(|a| a.resource_type == "application-inference-profile");
            if !well_formed {
                return Err(format!(
                    "[application_profiles] key {arn:?} is not an application inference profile ARN; expected \
                     \"arn:aws:bedrock:REGION:ACCOUNT:application-inference-profile/ID\""
                ));
            }
            if let Err(e) = self.resolve_id(target) {
                return Err(format!(
                    "[application_profiles] maps {arn:?} to {target:?}, which has no price ({e})"
                ));
            }
        }
        Ok(())
    }
}

impl PriceBook for Catalog {
    fn price(&self, model_id: &str) -> Option<ModelPrice> {
        self.resolve(model_id).ok().map(|r| r.price.into())
    }
}

/// A model id that no catalog entry prices.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct UnknownModel {
    model: String,
    kind: UnknownKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum UnknownKind {
    /// No entry for this base model.
    Model { base: String },
    /// An application inference profile ARN that is not mapped to a model.
    ApplicationProfile,
}

impl UnknownModel {
    /// Ids come from requests: keep error messages and logs bounded.
    const MAX_ID_CHARS: usize = 256;

    fn model(model: &str, base: &str) -> Self {
        UnknownModel {
            model: crate::text::clip(model, Self::MAX_ID_CHARS),
            kind: UnknownKind::Model {
                base: crate::text::clip(base, Self::MAX_ID_CHARS),
            },
        }
    }

    fn profile(arn: &str) -> Self {
        UnknownModel {
            model: crate::text::clip(arn, Self::MAX_ID_CHARS),
            kind: UnknownKind::ApplicationProfile,
        }
    }

    /// The id as the call named it.
    pub fn model_id(&self) -> &str {
        &self.model
    }

    fn describe(&self) -> String {
        let model = &self.model;
        match &self.kind {
            UnknownKind::Model { base } => format!(
                "no price for model {model:?}: add a [models.{base:?}] entry with its input and output prices \
                 per million tokens to the pricing file named in tollgate's config"
            ),
            UnknownKind::ApplicationProfile => format!(
                "no model for application inference profile {model:?}: map it under [application_profiles] in \
                 the pricing file named in tollgate's config, as {model:?} = \"<the model id it was created from>\""
            ),
        }
    }
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
struct CatalogFile {
    #[serde(default)]
    meta: Option<CatalogMeta>,
    #[serde(default)]
    prefix_premium_bp: BTreeMap<String, u32>,
    #[serde(default)]
    application_profiles: BTreeMap<String, String>,
    #[serde(default)]
    models: BTreeMap<String, ModelEntry>,
}

/// One model's prices as written; see the catalog header for defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    #[serde(default)]
    name: Option<String>,
    input: PerMillion,
    output: PerMillion,
    #[serde(default)]
    cache_read: Option<PerMillion>,
    #[serde(default)]
    cache_write_5m: Option<PerMillion>,
    #[serde(default)]
    cache_write_1h: Option<PerMillion>,
    #[serde(default)]
    prefix_premium_bp: BTreeMap<String, u32>,
}

impl ModelEntry {
    fn resolved<'c>(&'c self, key: &'c str, prefix: Option<&'static str>, premium_bp: u32) -> Resolved<'c> {
        let input = self.input.0;
        // Missing cache prices fall back to prices that never undercharge:
        // a model that reports cache tokens without a listed price pays input.
        let cache_write_5m = self.cache_write_5m.map_or(input, |p| p.0);
        let base = Price {
            input,
            output: self.output.0,
            cache_read: self.cache_read.map_or(input, |p| p.0),
            cache_write_5m,
            cache_write_1h: self.cache_write_1h.map_or(cache_write_5m, |p| p.0),
        };
        Resolved {
            base_model: key,
            name: self.name.as_deref(),
            prefix,
            premium_bp,
            price: base.with_premium(premium_bp),
        }
    }
}

/// A price per million tokens: a string of US dollars ("3.00", "$0.035") or
/// an integer of nano-dollars. Floats are refused: they are not exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PerMillion(NanoUsd);

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

fn parse_file(text: &str, origin: &str) -> Result<CatalogFile, CatalogError> {
    let schema_error = |key: String, err: &toml::de::Error| CatalogError::Schema {
        origin: origin.to_owned(),
        key,
        line: err.span().map(|span| line_of(text, span.start)),
        problem: err.message().trim().to_owned(),
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| schema_error(String::new(), &e))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| schema_error(toml_key_path(e.path()), e.inner()))
}

pub(crate) fn line_of(text: &str, byte_offset: usize) -> usize {
    let end = byte_offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Renders a key path as TOML spells it: `models."amazon.nova-micro-v1:0".input`.
pub(crate) fn toml_key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        if !out.is_empty() {
            out.push('.');
        }
        match segment {
            Segment::Map { key } => {
                let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => out.push_str(variant),
            Segment::Unknown => out.push('?'),
        }
    }
    out
}

/// The parts of a Bedrock ARN that pricing cares about.
struct Arn<'a> {
    resource_type: &'a str,
    resource_id: &'a str,
}

impl<'a> Arn<'a> {
    /// `arn:PARTITION:bedrock:REGION:ACCOUNT:TYPE/ID`; the id may contain `:`.
    /// Foundation-model ARNs have an empty account.
    fn parse(s: &'a str) -> Option<Arn<'a>> {
        let mut parts = s.splitn(6, ':');
        let (arn, partition, service, region, _account, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if arn != "arn" || !partition.starts_with("aws") || service != "bedrock" || region.is_empty() {
            return None;
        }
        let (resource_type, resource_id) = resource.split_once('/')?;
        (!resource_type.is_empty() && !resource_id.is_empty()).then_some(Arn {
            resource_type,
            resource_id,
        })
    }
}

/// A fixed table of prices by base model id. Regional profile ids
/// (`us.…`) resolve to their base model, without premiums.
#[derive(Debug, Clone, Default)]
pub struct StaticPrices {
    by_model: HashMap<String, ModelPrice>,
}

impl StaticPrices {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, model_id: &str, price: ModelPrice) -> Self {
        self.by_model.insert(model_id.to_owned(), price);
        self
    }

    /// A handful of common Bedrock models at their us-east-1 on-demand
    /// prices, for examples and tests.
    pub fn examples() -> Self {
        let p = |input: u64, output: u64| ModelPrice {
            input,
            output,
            cache_read: input / 10,
            cache_write: input + input / 4,
        };
        Self::new()
            .with(
                "anthropic.claude-sonnet-4-20250514-v1:0",
                p(3_000_000_000, 15_000_000_000),
            )
            .with(
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                p(800_000_000, 4_000_000_000),
            )
            .with("amazon.nova-pro-v1:0", p(800_000_000, 3_200_000_000))
            .with("amazon.nova-lite-v1:0", p(60_000_000, 240_000_000))
            .with("amazon.nova-micro-v1:0", p(35_000_000, 140_000_000))
    }
}

impl PriceBook for StaticPrices {
    fn price(&self, model_id: &str) -> Option<ModelPrice> {
        let (_, base) = split_region_prefix(model_id);
        self.by_model.get(base).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SONNET_4: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
    const SONNET_45: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";
    const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";
    const ARN: &str = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/a1b2c3d4e5f6";

    fn usage(input: u64, output: u64, read: u64, write: u64, write_1h: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_input_tokens: read,
            cache_write_input_tokens: write,
            cache_write_1h_input_tokens: write_1h,
        }
    }

    fn cost(catalog: &Catalog, model: &str, u: Usage) -> u64 {
        catalog.cost(model, &u).expect("priced").get()
    }

    #[test]
    fn resolves_regional_profiles_and_refuses_unknown_models() {
        let prices = StaticPrices::examples();
        let base = prices.price("amazon.nova-micro-v1:0").expect("known");
        assert_eq!(prices.price("us.amazon.nova-micro-v1:0"), Some(base));
        assert_eq!(prices.price("acme.unknown-model"), None);
    }

    #[test]
    fn embedded_catalog_prices_every_required_model() {
        let catalog = Catalog::embedded();
        for id in [
            SONNET_4,
            SONNET_45,
            "anthropic.claude-opus-4-20250514-v1:0",
            "anthropic.claude-opus-4-1-20250805-v1:0",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
            "anthropic.claude-3-haiku-20240307-v1:0",
            NOVA_MICRO,
            "amazon.nova-lite-v1:0",
            "amazon.nova-pro-v1:0",
            "amazon.nova-premier-v1:0",
            "meta.llama3-3-70b-instruct-v1:0",
            "meta.llama3-1-8b-instruct-v1:0",
            "meta.llama4-maverick-17b-instruct-v1:0",
            "meta.llama4-scout-17b-instruct-v1:0",
            "mistral.mistral-large-2402-v1:0",
            "mistral.mistral-small-2402-v1:0",
            "mistral.pixtral-large-2502-v1:0",
        ] {
            let r = catalog.resolve(id).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                r.price.input.get() > 0 && r.price.output.get() >= r.price.input.get(),
                "{id}: {r:?}"
            );
        }
        assert!(catalog.meta().source.contains("us-east-1"), "{:?}", catalog.meta());
        assert!(!catalog.meta().as_of.is_empty());
    }

    #[test]
    fn embedded_anthropic_cache_prices_follow_the_published_multipliers() {
        // Read 0.1x, 5-minute write 1.25x, 1-hour write 2x input: catches typos.
        let catalog = Catalog::embedded();
        for id in catalog
            .model_ids()
            .filter(|id| id.starts_with("anthropic.") && !id.contains("claude-3-haiku"))
        {
            let entry = &catalog.models[id];
            let input = entry.input.0.get();
            assert_eq!(entry.cache_read.map(|p| p.0.get()), Some(input / 10), "{id}");
            assert_eq!(entry.cache_write_5m.map(|p| p.0.get()), Some(input * 5 / 4), "{id}");
            if let Some(p) = entry.cache_write_1h {
                assert_eq!(p.0.get(), input * 2, "{id}");
            }
        }
    }

    #[test]
    fn each_price_component_costs_what_the_list_price_says() {
        let c = Catalog::embedded();
        // Sonnet 4: $3 in, $15 out, $0.30 cache read, $3.75 cache write, per million.
        // 1000 tokens at $3/M = $0.003 = 3_000_000 nano-dollars.
        assert_eq!(cost(&c, SONNET_4, usage(1000, 0, 0, 0, 0)), 3_000_000);
        assert_eq!(cost(&c, SONNET_4, usage(0, 1000, 0, 0, 0)), 15_000_000);
        assert_eq!(cost(&c, SONNET_4, usage(0, 0, 1000, 0, 0)), 300_000);
        assert_eq!(cost(&c, SONNET_4, usage(0, 0, 0, 1000, 0)), 3_750_000);
        // Sonnet 4.5 has a 1-hour TTL at $6/M.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 1000, 1000)), 6_000_000);
        // All at once: 2000*3 + 500*15 + 10_000*0.30 + 4000*3.75 ($/M) = 6000+7500+3000+15000 micro-dollars.
        assert_eq!(cost(&c, SONNET_4, usage(2000, 500, 10_000, 4000, 0)), 31_500_000);
        // Nova Micro: $0.035 in, $0.14 out, $0.00875 cache read.
        assert_eq!(cost(&c, NOVA_MICRO, usage(1_000_000, 0, 0, 0, 0)), 35_000_000);
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 1_000_000, 0, 0, 0)), 140_000_000);
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 0, 1_000_000, 0, 0)), 8_750_000);
        // One cache-read token is 8.75 nano-dollars: rounds up to 9.
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 0, 1, 0, 0)), 9);
        // Llama 4 Maverick: $0.24 in, $0.97 out.
        assert_eq!(
            cost(&c, "meta.llama4-maverick-17b-instruct-v1:0", usage(1000, 1000, 0, 0, 0)),
            1_210_000
        );
    }

    #[test]
    fn cache_writes_split_by_ttl_and_missing_prices_never_undercharge() {
        let c = Catalog::embedded();
        // 1000 writes, 400 of them 1h: 600*$3.75/M + 400*$6/M.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 1000, 400)), 2_250_000 + 2_400_000);
        // Without the split every write is a 5-minute write.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 1000, 0)), 3_750_000);
        // An inconsistent 1h count above the total is charged whole at 1h.
        assert_eq!(cost(&c, SONNET_45, usage(0, 0, 0, 10, 1000)), 6_000_000);
        // Sonnet 4 lists no 1h price: 1h writes fall back to the 5-minute price.
        assert_eq!(cost(&c, SONNET_4, usage(0, 0, 0, 1000, 1000)), 3_750_000);
        // Claude 3 Haiku lists no cache prices: cache tokens pay input ($0.25/M).
        assert_eq!(
            cost(&c, "anthropic.claude-3-haiku-20240307-v1:0", usage(0, 0, 1000, 1000, 0)),
            500_000
        );
    }

    #[test]
    fn cost_rounds_up_once_over_the_sum() {
        // Half a nano-dollar per token each way: one of each is exactly 1, not 2.
        let c = Catalog::empty()
            .with_overrides_str("[models.\"acme.tiny-v1\"]\ninput = 500_000\noutput = 500_000\n", "test")
            .expect("valid");
        assert_eq!(cost(&c, "acme.tiny-v1", usage(1, 1, 0, 0, 0)), 1);
        assert_eq!(cost(&c, "acme.tiny-v1", usage(1, 0, 0, 0, 0)), 1);
        assert_eq!(cost(&c, "acme.tiny-v1", usage(3, 0, 0, 0, 0)), 2);
        assert_eq!(cost(&c, "acme.tiny-v1", usage(0, 0, 0, 0, 0)), 0);
        // Absurd counts saturate rather than wrap.
        let huge = usage(u64::MAX, u64::MAX, u64::MAX, u64::MAX, 0);
        assert_eq!(cost(&Catalog::embedded(), SONNET_4, huge), u64::MAX);
    }

    #[test]
    fn regional_prefixes_resolve_with_their_premium() {
        let c = Catalog::embedded();
        let global = c.resolve(&format!("global.{SONNET_45}")).expect("priced");
        assert_eq!(
            (global.base_model, global.prefix, global.premium_bp),
            (SONNET_45, Some("global"), 0)
        );
        assert_eq!(global.price.input.get(), 3_000_000_000);
        // Geo profiles of Sonnet 4.5 cost 10% more: $3.30 in, $16.50 out.
        for prefix in ["us", "eu", "apac", "jp", "au"] {
            let r = c.resolve(&format!("{prefix}.{SONNET_45}")).expect("priced");
            assert_eq!((r.prefix, r.premium_bp), (Some(prefix), 1000));
            assert_eq!(r.price.input.get(), 3_300_000_000, "{prefix}");
        }
        let us = format!("us.{SONNET_45}");
        assert_eq!(cost(&c, &us, usage(1000, 1000, 0, 0, 0)), 3_300_000 + 16_500_000);
        assert_eq!(cost(&c, &us, usage(0, 0, 1000, 1000, 1000)), 330_000 + 6_600_000);
        // Older models have no geo premium.
        assert_eq!(cost(&c, &format!("eu.{SONNET_4}"), usage(1000, 0, 0, 0, 0)), 3_000_000);
        // Only known prefixes strip.
        assert!(c.resolve(&format!("xx.{SONNET_4}")).is_err());
        assert!(c.resolve("us.").is_err());
    }

    #[test]
    fn arns_resolve_to_their_base_model() {
        let c = Catalog::embedded()
            .with_application_profile(ARN, &format!("us.{SONNET_45}"))
            .expect("valid");
        let r = c.resolve(ARN).expect("mapped");
        assert_eq!((r.base_model, r.premium_bp), (SONNET_45, 1000));
        assert_eq!(cost(&c, ARN, usage(1000, 0, 0, 0, 0)), 3_300_000);
        // Foundation-model and system inference-profile ARNs need no mapping.
        let fm = format!("arn:aws:bedrock:us-east-1::foundation-model/{NOVA_MICRO}");
        assert_eq!(c.resolve(&fm).expect("priced").base_model, NOVA_MICRO);
        let ip = format!("arn:aws:bedrock:us-east-1:111122223333:inference-profile/us.{SONNET_45}");
        assert_eq!(c.resolve(&ip).expect("priced").premium_bp, 1000);
        // An unmapped application profile says how to map it.
        let other = ARN.replace("a1b2c3d4e5f6", "zzz");
        let err = c.resolve(&other).expect_err("unmapped").to_string();
        assert!(err.contains(&other) && err.contains("[application_profiles]"), "{err}");
    }

    #[test]
    fn application_profiles_come_from_the_pricing_file_too() {
        let file = format!("[application_profiles]\n{ARN:?} = {NOVA_MICRO:?}\n");
        let c = Catalog::embedded().with_overrides_str(&file, "test").expect("valid");
        assert_eq!(c.resolve(ARN).expect("mapped").base_model, NOVA_MICRO);
        assert_eq!(c.price(ARN), c.price(NOVA_MICRO));
    }

    #[test]
    fn overrides_replace_and_extend_entries() {
        let file = r#"
            [prefix_premium_bp]
            eu = 500

            [models."amazon.nova-micro-v1:0"]
            input = "$0.04"
            output = 150_000_000

            [models."acme.house-model-v1:0"]
            name = "Our model"
            input = "1"
            output = "2.5"
            cache_read = "0.000000001"
        "#;
        let c = Catalog::embedded().with_overrides_str(file, "test").expect("valid");
        assert_eq!(cost(&c, NOVA_MICRO, usage(1000, 1000, 0, 0, 0)), 40_000 + 150_000);
        // The replaced entry lists no cache price any more: input price applies.
        assert_eq!(cost(&c, NOVA_MICRO, usage(0, 0, 1000, 0, 0)), 40_000);
        let own = c.resolve("acme.house-model-v1:0").expect("added");
        assert_eq!(own.name, Some("Our model"));
        assert_eq!(
            (own.price.input.get(), own.price.output.get()),
            (1_000_000_000, 2_500_000_000)
        );
        assert_eq!(own.price.cache_read.get(), 1);
        // The catalog-wide eu premium now applies to models without their own.
        assert_eq!(
            c.resolve(&format!("eu.{SONNET_4}")).expect("priced").price.input.get(),
            3_150_000_000
        );
        assert_eq!(c.resolve(&format!("eu.{SONNET_45}")).expect("priced").premium_bp, 1000);
        // Everything else is untouched.
        assert_eq!(c.price(SONNET_4), Catalog::embedded().price(SONNET_4));
    }

    #[test]
    fn overrides_load_from_a_file() {
        let dir = std::env::temp_dir().join(format!("tollgate-pricing-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("prices.toml");
        std::fs::write(&path, "[models.\"acme.m\"]\ninput = \"2\"\noutput = \"4\"\n").expect("write");
        let c = Catalog::embedded().with_overrides(&path).expect("valid");
        assert_eq!(cost(&c, "acme.m", usage(1, 1, 0, 0, 0)), 6_000);
        let missing = dir.join("missing.toml");
        let err = Catalog::embedded()
            .with_overrides(&missing)
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("missing.toml") && err.contains("check the pricing file path"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn unknown_models_are_errors_that_say_how_to_price_them() {
        let c = Catalog::embedded();
        let err = c.cost("us.acme.mystery-v1:0", &Usage::default()).expect_err("unknown");
        assert_eq!(err.model_id(), "us.acme.mystery-v1:0");
        let text = err.to_string();
        assert!(text.contains("no price for model \"us.acme.mystery-v1:0\""), "{text}");
        assert!(text.contains("add a [models.\"acme.mystery-v1:0\"] entry"), "{text}");
        assert!(text.contains("pricing file named in tollgate's config"), "{text}");
        assert!(c.worst_case("acme.mystery", 1, 1).is_err());
        assert_eq!(c.price("acme.mystery"), None);
        // Hostile ids are bounded and escaped in the message.
        let long = format!("x\n{}", "y".repeat(10_000));
        let text = c.resolve(&long).expect_err("unknown").to_string();
        assert!(text.len() < 1_000 && !text.contains('\n'), "{text}");
    }

    #[test]
    fn worst_case_charges_max_output() {
        let c = Catalog::embedded();
        // 1000 in at $3/M + 4096 out at $15/M.
        assert_eq!(
            c.worst_case(SONNET_4, 1000, 4096).expect("priced").get(),
            3_000_000 + 61_440_000
        );
        // With cache points the input may be billed as 1h writes at $6/M.
        let cached = c.worst_case_caching(SONNET_45, 1000, 0).expect("priced").get();
        assert_eq!(cached, 6_000_000);
    }

    #[test]
    fn price_book_applies_premium_and_maps_the_5_minute_write() {
        let c = Catalog::embedded();
        let p = c.price(&format!("us.{SONNET_45}")).expect("priced");
        assert_eq!(
            p,
            ModelPrice {
                input: 3_300_000_000,
                output: 16_500_000_000,
                cache_read: 330_000_000,
                cache_write: 4_125_000_000,
            }
        );
        fn assert_price_book<T: PriceBook>() {}
        assert_price_book::<Catalog>();
    }

    #[test]
    fn bad_pricing_files_say_what_and_where() {
        let check = |text: &str, wanted: &[&str]| {
            let err = Catalog::embedded()
                .with_overrides_str(text, "prices.toml")
                .expect_err("invalid")
                .to_string();
            for w in wanted {
                assert!(err.contains(w), "{w:?} missing from: {err}");
            }
        };
        check(
            "[models.\"amazon.nova-micro-v1:0\"]\ninptu = \"1\"\ninput = \"1\"\noutput = \"1\"\n",
            &[
                "prices.toml",
                "line 2",
                "`models.\"amazon.nova-micro-v1:0\".inptu`",
                "unknown field `inptu`",
                "schema is described",
            ],
        );
        check("[modles]\n", &["`modles`", "unknown field"]);
        check(
            "[models.\"m\"]\ninput = \"1\"\n",
            &["`models.m`", "missing field `output`"],
        );
        check(
            "[models.m]\ninput = 3.0\noutput = \"1\"\n",
            &["`models.m.input`", "float", "\"3\""],
        );
        check(
            "[models.m]\ninput = \"3,00\"\noutput = \"1\"\n",
            &["`models.m.input`", "\"3,00\"", "US dollars"],
        );
        check(
            "[models.m]\ninput = -1\noutput = \"1\"\n",
            &["`models.m.input`", "negative"],
        );
        check("[prefix_premium_bp]\nus = -5\n", &["`prefix_premium_bp.us`"]);
        check(
            "[prefix_premium_bp]\nusa = 5\n",
            &["unknown inference-profile prefix \"usa\"", "known prefixes"],
        );
        check(
            "[prefix_premium_bp]\nus = 20000\n",
            &["20000 basis points", "1000 basis points is +10%"],
        );
        check(
            "[application_profiles]\n\"arn:aws:bedrock:us-east-1:1:inference-profile/x\" = \"m\"\n",
            &["not an application inference profile ARN"],
        );
        check(
            &format!("[application_profiles]\n{ARN:?} = \"acme.nothing\"\n"),
            &["maps", "\"acme.nothing\"", "has no price"],
        );
        check("[models\ninput = 1\n", &["prices.toml, line 1"]);
    }

    #[test]
    fn usd_strings_parse_exactly() {
        assert_eq!(NanoUsd::parse_usd("3.30"), Some(NanoUsd(3_300_000_000)));
        assert_eq!(NanoUsd::parse_usd("$0.00875"), Some(NanoUsd(8_750_000)));
        assert_eq!(NanoUsd::parse_usd("0.000000001"), Some(NanoUsd(1)));
        assert_eq!(NanoUsd::parse_usd("12"), Some(NanoUsd(12_000_000_000)));
        for bad in [
            "",
            ".5",
            "5.",
            "1.2.3",
            "-1",
            "1e3",
            "0.0000000001",
            "99999999999999999999",
            "$",
        ] {
            assert_eq!(NanoUsd::parse_usd(bad), None, "{bad}");
        }
    }

    #[test]
    fn usage_reads_converse_responses() {
        let v = serde_json::json!({
            "inputTokens": 12, "outputTokens": 34, "totalTokens": 46,
            "cacheReadInputTokens": 100, "cacheWriteInputTokens": 7
        });
        let u = Usage::from_converse(&v);
        assert_eq!(u, usage(12, 34, 100, 7, 0));
        assert_eq!(u.prompt_tokens(), 119);
        assert_eq!(
            Usage::from_converse(&serde_json::json!({"inputTokens": -3})),
            Usage::default()
        );
    }
}

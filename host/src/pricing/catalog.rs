//! The catalog: Bedrock prices by model, the premiums of inference-profile
//! prefixes, and operators' application inference profiles; how a model id
//! resolves to a price.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::arn::Arn;
use super::file::{CatalogError, CatalogMeta, ModelEntry, RegionEntry, TierEntry, parse_file};
use super::metered::{Metered, ServedAs};
use super::price::{Price, PriceBook, Usage};
use super::rates::{Charge, Rates, TierBp, hold_cost};
use crate::contract::{ModelOption, ModelPrice};
use crate::ids::{REGION_PREFIXES, split_region_prefix};
use crate::money::NanoUsd;

/// A premium above +100% is far more likely a typo than an AWS price.
const MAX_PREMIUM_BP: u32 = 10_000;
/// A service tier above 4x the standard price is far more likely a typo.
const MAX_TIER_BP: u32 = 40_000;
/// The region the embedded `[models]` table is priced in, when a file names none.
const DEFAULT_REGION: &str = "us-east-1";

static EMBEDDED_CATALOG: &str = include_str!("catalog.toml");

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
    /// The standard on-demand prices (`rates.standard`).
    pub price: Price,
    /// Every price the model may bill at in the catalog's region.
    pub rates: Rates,
}

/// Bedrock model prices: the embedded catalog plus the operator's overrides,
/// for one region.
#[derive(Clone, Debug)]
pub struct Catalog {
    meta: CatalogMeta,
    prefix_premium_bp: BTreeMap<String, u32>,
    application_profiles: BTreeMap<String, String>,
    pub(super) models: BTreeMap<String, ModelEntry>,
    base_regions: Vec<String>,
    service_tier_bp: BTreeMap<String, u32>,
    regions: BTreeMap<String, RegionEntry>,
    /// The region calls are priced in (the upstream's).
    region: String,
    /// A digest of every price source applied, in order.
    sources: String,
    /// `sources` and the region digested: the price book a charge names.
    version: String,
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
            base_regions: vec![DEFAULT_REGION.to_owned()],
            service_tier_bp: BTreeMap::new(),
            regions: BTreeMap::new(),
            region: DEFAULT_REGION.to_owned(),
            sources: String::new(),
            version: String::new(),
        }
    }

    /// Applies the pricing file at `path` (same schema as the embedded
    /// catalog): its models replace or add whole entries, its prefix premiums,
    /// tiers, regions and application profiles replace or add single keys.
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
        if let Some(base) = file.base_regions {
            self.base_regions = base;
            if let Some(first) = self.base_regions.first() {
                self.region = first.clone();
            }
        }
        self.service_tier_bp.extend(file.service_tier_bp);
        self.regions.extend(file.regions);
        self.chain_version(toml_text);
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
        self.chain_version(&format!("{arn}={model_id}"));
        self.validate().map_err(|problem| CatalogError::Invalid {
            origin: "application profile configuration".to_owned(),
            problem,
        })?;
        Ok(self)
    }

    /// Prices calls in `region` (the upstream's): AWS bills by the region a
    /// call is sent to, whatever its cross-region profile. A region the
    /// catalog has no prices for is refused rather than guessed.
    pub fn in_region(mut self, region: &str) -> Result<Catalog, CatalogError> {
        if !self.knows_region(region) {
            let known: Vec<&str> = self.regions().collect();
            return Err(CatalogError::Invalid {
                origin: "upstream region".to_owned(),
                problem: format!(
                    "no prices for region {region:?}: the catalog prices {}; add a [regions.{region:?}] table to \
                     the pricing file named in tollgate's config (premium_bp = 0 bills it at the [models] prices)",
                    known.join(", ")
                ),
            });
        }
        self.region = region.to_owned();
        self.version = digest(&self.sources, &self.region);
        Ok(self)
    }

    pub fn meta(&self) -> &CatalogMeta {
        &self.meta
    }

    /// The region calls are priced in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Every region the catalog has prices for.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.base_regions
            .iter()
            .map(String::as_str)
            .chain(self.regions.keys().map(String::as_str))
    }

    fn knows_region(&self, region: &str) -> bool {
        self.regions().any(|r| r == region)
    }

    /// A short digest of every price source applied, in order, and the region:
    /// the price book a charge was computed with.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn chain_version(&mut self, text: &str) {
        self.sources = digest(&self.sources, text);
        self.version = digest(&self.sources, &self.region);
    }

    /// The ids of every priced model, sorted.
    pub fn model_ids(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Resolves any id a Bedrock call may name to its base model and prices.
    pub fn resolve(&self, model_id: &str) -> Result<Resolved<'_>, UnknownModel> {
        match self.application_profiles.get(model_id) {
            // Targets are checked at load; an error here still names the ARN.
            Some(target) => self.resolve_id(target).map_err(|_| UnknownModel::profile(model_id)),
            None => self.resolve_id(model_id),
        }
    }

    /// The cost of a call that reported `usage` at the standard tier, rounded up.
    pub fn cost(&self, model_id: &str, usage: &Usage) -> Result<NanoUsd, UnknownModel> {
        Ok(self.resolve(model_id)?.price.cost(usage))
    }

    /// The charge of a metered call: its tier, latency mode, long-context
    /// tier and cache TTLs all priced.
    pub fn charge(&self, model_id: &str, metered: &Metered) -> Result<Charge, PricingError> {
        let resolved = self.resolve(model_id)?;
        resolved.rates.charge(metered).map_err(|why| PricingError::Unpriced {
            model: crate::text::clip(model_id, 256),
            why,
        })
    }

    /// What to hold for a call asked to be served as `asked`: `input_tokens`
    /// of prompt (billed as the dearest cache write when `caching`) and
    /// `max_output_tokens` of output, at the dearest prices that may apply.
    pub fn hold(
        &self,
        model_id: &str,
        input_tokens: u64,
        max_output_tokens: u64,
        caching: bool,
        asked: ServedAs,
    ) -> Result<NanoUsd, PricingError> {
        self.resolve(model_id)?
            .rates
            .hold(asked, input_tokens, max_output_tokens, caching)
            .map_err(|why| PricingError::Unpriced {
                model: crate::text::clip(model_id, 256),
                why,
            })
    }

    /// `model_id` as a policy's option for a call (contract 0.2.0): its
    /// prices as that call would pay them, and its hold, as [`Self::hold`].
    pub fn option(
        &self,
        model_id: &str,
        input_tokens: u64,
        max_output_tokens: u64,
        caching: bool,
        asked: ServedAs,
    ) -> ModelOption {
        let rates = self.resolve(model_id).ok().map(|resolved| resolved.rates);
        let price = rates.and_then(|rates| rates.unit_prices(asked, input_tokens).ok());
        let worst = rates.and_then(|rates| rates.hold(asked, input_tokens, max_output_tokens, caching).ok());
        ModelOption {
            model_id: model_id.to_owned(),
            price: price.map(|(price, _)| price.into()),
            worst_case_cost: worst.map(NanoUsd::get),
        }
    }

    /// What to reserve for a standard call: every input token at the input
    /// price and `max_output_tokens` of output. Requests with cache points
    /// need [`Catalog::worst_case_caching`].
    pub fn worst_case(
        &self,
        model_id: &str,
        input_tokens: u64,
        max_output_tokens: u64,
    ) -> Result<NanoUsd, UnknownModel> {
        Ok(hold_cost(
            self.resolve(model_id)?.price,
            input_tokens,
            max_output_tokens,
            false,
        ))
    }

    /// [`Catalog::worst_case`] for a request with cache points: its input may
    /// be billed as cache writes, which cost more than plain input.
    pub fn worst_case_caching(
        &self,
        model_id: &str,
        input_tokens: u64,
        max_output_tokens: u64,
    ) -> Result<NanoUsd, UnknownModel> {
        Ok(hold_cost(
            self.resolve(model_id)?.price,
            input_tokens,
            max_output_tokens,
            true,
        ))
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
        let region = self.regions.get(&self.region);
        let region_models = region.map(|r| &r.models);
        let region_bp = region.map_or(0, |r| r.premium_bp);
        // The region's own entry replaces the base one whole; else the base
        // entry plus the region's premium. An exact entry wins over a prefix,
        // so an operator may price one profile id on its own.
        let lookup = |key: &str| {
            region_models
                .and_then(|m| m.get_key_value(key))
                .map(|(k, e)| (k, e, 0))
                .or_else(|| self.models.get_key_value(key).map(|(k, e)| (k, e, region_bp)))
        };
        if let Some((key, entry, bp)) = lookup(id) {
            return Ok(self.resolve_entry(entry, key, None, bp));
        }
        let (prefix, base) = split_region_prefix(id);
        if let Some(prefix) = prefix
            && let Some((key, entry, bp)) = lookup(base)
        {
            return Ok(self.resolve_entry(entry, key, Some(prefix), bp));
        }
        Err(UnknownModel::model(model_id, base))
    }

    /// A catalog entry priced for a call: its prices with the region's and the prefix's premiums.
    fn resolve_entry<'c>(
        &'c self,
        entry: &'c ModelEntry,
        key: &'c str,
        prefix: Option<&'static str>,
        region_bp: u32,
    ) -> Resolved<'c> {
        let premium_bp = prefix
            .and_then(|p| entry.prefix_premium_bp.get(p).or_else(|| self.prefix_premium_bp.get(p)))
            .copied()
            .unwrap_or(0);
        let premiums = |p: Price| p.with_premium(region_bp).with_premium(premium_bp);
        let standard = standard_prices(entry);
        let tier = |name: &str| {
            entry
                .service_tier_bp
                .get(name)
                .or_else(|| self.service_tier_bp.get(name))
                .copied()
        };
        let rates = Rates {
            standard: premiums(standard),
            long_context: entry
                .long_context
                .as_ref()
                .map(|l| (l.above_input_tokens, premiums(tier_prices(&standard, &l.prices())))),
            latency_optimized: entry
                .latency_optimized
                .as_ref()
                .map(|t| premiums(tier_prices(&standard, t))),
            tiers: TierBp {
                priority: tier("priority"),
                flex: tier("flex"),
                reserved: tier("reserved"),
            },
        };
        Resolved {
            base_model: key,
            name: entry.name.as_deref(),
            prefix,
            premium_bp,
            price: rates.standard,
            rates,
        }
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
        let check_tiers = |table: &BTreeMap<String, u32>, at: &str| -> Result<(), String> {
            for (tier, &bp) in table {
                if !matches!(tier.as_str(), "priority" | "flex" | "reserved") {
                    return Err(format!(
                        "{at} names unknown service tier {tier:?}; the tiers beside the standard one are priority, \
                         flex and reserved"
                    ));
                }
                if bp == 0 || bp > MAX_TIER_BP {
                    return Err(format!(
                        "{at}.{tier} = {bp} basis points of the standard price is outside 1-{MAX_TIER_BP}; \
                         17500 is 1.75x, 5000 is half"
                    ));
                }
            }
            Ok(())
        };
        let check_models = |models: &BTreeMap<String, ModelEntry>, at: &str| -> Result<(), String> {
            for (id, entry) in models {
                if id.is_empty() || id.starts_with("arn:") {
                    return Err(format!(
                        "{at}[models.{id:?}]: a model entry needs a Bedrock model id such as \
                         \"anthropic.claude-sonnet-4-20250514-v1:0\"; map ARNs under [application_profiles]"
                    ));
                }
                check_prefixes(
                    &entry.prefix_premium_bp,
                    &format!("{at}[models.{id:?}].prefix_premium_bp"),
                )?;
                check_tiers(&entry.service_tier_bp, &format!("{at}[models.{id:?}].service_tier_bp"))?;
                if entry.long_context.as_ref().is_some_and(|l| l.above_input_tokens == 0) {
                    return Err(format!(
                        "{at}[models.{id:?}].long_context.above_input_tokens must be at least 1, e.g. 200000"
                    ));
                }
            }
            Ok(())
        };
        check_prefixes(&self.prefix_premium_bp, "[prefix_premium_bp]")?;
        check_tiers(&self.service_tier_bp, "[service_tier_bp]")?;
        check_models(&self.models, "")?;
        if self.base_regions.is_empty() {
            return Err(
                "base_regions is empty: name the regions the [models] prices are for, e.g. \
                        [\"us-east-1\"]"
                    .into(),
            );
        }
        for (name, region) in &self.regions {
            let well_formed = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !well_formed {
                return Err(format!(
                    "[regions.{name:?}]: a region is an AWS region name such as \"eu-central-1\""
                ));
            }
            if self.base_regions.contains(name) {
                return Err(format!(
                    "[regions.{name:?}] is also in base_regions; a region is priced one way only"
                ));
            }
            if region.premium_bp > MAX_PREMIUM_BP {
                return Err(format!(
                    "[regions.{name:?}].premium_bp = {} is above the {MAX_PREMIUM_BP} (+100%) allowed",
                    region.premium_bp
                ));
            }
            check_models(&region.models, &format!("[regions.{name:?}]"))?;
        }
        if !self.knows_region(&self.region) {
            return Err(format!("the region {:?} is not priced", self.region));
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

/// A call that cannot be priced: an unknown model, or a tier or mode the
/// catalog has no price for. A call that already ran is charged its hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error(transparent)]
    Unknown(#[from] UnknownModel),
    #[error("cannot price a call of {model:?}: {why}")]
    Unpriced { model: String, why: String },
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

/// The first 8 bytes of SHA-256 over `a`, a separator and `b`, in hex.
fn digest(a: &str, b: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(a.as_bytes());
    hasher.update([0]);
    hasher.update(b.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// An entry's standard prices. Missing cache prices fall back to prices that
/// never undercharge: a model that reports cache tokens without a listed
/// price pays input.
fn standard_prices(entry: &ModelEntry) -> Price {
    let input = entry.input.0;
    let cache_write_5m = entry.cache_write_5m.map_or(input, |p| p.0);
    Price {
        input,
        output: entry.output.0,
        cache_read: entry.cache_read.map_or(input, |p| p.0),
        cache_write_5m,
        cache_write_1h: entry.cache_write_1h.map_or(cache_write_5m, |p| p.0),
    }
}

/// A tier's prices; a cache price it does not list is the standard one
/// scaled as the input price is, rounded up.
fn tier_prices(standard: &Price, tier: &TierEntry) -> Price {
    let input = tier.input.0;
    let scaled = standard.scaled(u128::from(input.get()), u128::from(standard.input.get().max(1)));
    let scaled = if standard.input.get() == 0 {
        Price {
            input,
            output: tier.output.0,
            cache_read: input,
            cache_write_5m: input,
            cache_write_1h: input,
        }
    } else {
        scaled
    };
    Price {
        input,
        output: tier.output.0,
        cache_read: tier.cache_read.map_or(scaled.cache_read, |p| p.0),
        cache_write_5m: tier.cache_write_5m.map_or(scaled.cache_write_5m, |p| p.0),
        cache_write_1h: tier.cache_write_1h.map_or(scaled.cache_write_1h, |p| p.0),
    }
}

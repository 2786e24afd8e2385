//! The catalog: Bedrock prices by model, the premiums of inference-profile
//! prefixes, and operators' application inference profiles; how a model id
//! resolves to a price.

use std::collections::BTreeMap;
use std::path::Path;

use super::arn::Arn;
use super::file::{CatalogError, CatalogMeta, ModelEntry, parse_file};
use super::price::{Price, PriceBook, Usage};
use crate::contract::ModelPrice;
use crate::ids::{REGION_PREFIXES, split_region_prefix};
use crate::money::NanoUsd;

/// A premium above +100% is far more likely a typo than an AWS price.
const MAX_PREMIUM_BP: u32 = 10_000;

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
    pub price: Price,
}

/// Bedrock model prices: the embedded catalog plus the operator's overrides.
#[derive(Clone, Debug)]
pub struct Catalog {
    meta: CatalogMeta,
    prefix_premium_bp: BTreeMap<String, u32>,
    application_profiles: BTreeMap<String, String>,
    pub(super) models: BTreeMap<String, ModelEntry>,
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
            return Ok(resolve_entry(entry, key, None, 0));
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
            return Ok(resolve_entry(entry, key, Some(prefix), bp));
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

/// A catalog entry priced for a call: its prices with the prefix's premium.
fn resolve_entry<'c>(
    entry: &'c ModelEntry,
    key: &'c str,
    prefix: Option<&'static str>,
    premium_bp: u32,
) -> Resolved<'c> {
    let input = entry.input.0;
    // Missing cache prices fall back to prices that never undercharge:
    // a model that reports cache tokens without a listed price pays input.
    let cache_write_5m = entry.cache_write_5m.map_or(input, |p| p.0);
    let base = Price {
        input,
        output: entry.output.0,
        cache_read: entry.cache_read.map_or(input, |p| p.0),
        cache_write_5m,
        cache_write_1h: entry.cache_write_1h.map_or(cache_write_5m, |p| p.0),
    };
    Resolved {
        base_model: key,
        name: entry.name.as_deref(),
        prefix,
        premium_bp,
        price: base.with_premium(premium_bp),
    }
}

//! Prices and usage: nano-dollars per million tokens, the token counts
//! Bedrock reports, and the cost of one against the other (rounded up once).

use serde::{Deserialize, Serialize};

use crate::contract::ModelPrice;
use crate::money::NanoUsd;

/// Looks up the on-demand price of a model id. Called on the decision path,
/// so it must be cheap and must not block.
pub trait PriceBook: Send + Sync + 'static {
    /// Nano-dollars per million tokens, or `None` for an unknown model.
    fn price(&self, model_id: &str) -> Option<ModelPrice>;
}

pub(super) const BP_PER_UNIT: u128 = 10_000;
pub(super) const TOKENS_PER_PRICE_UNIT: u128 = 1_000_000;

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
    /// Reads a Converse response's `usage` object, as Bedrock names its
    /// fields. `inputTokens` and `outputTokens` must be there; every count
    /// must be a whole number; `cacheDetails` splits the cache writes by TTL.
    /// Anything else is an error, so the call is charged its hold rather than
    /// a guess.
    pub fn read(usage: &serde_json::Value) -> Result<Usage, String> {
        let count = |v: &serde_json::Value, name: &str, required: bool| -> Result<u64, String> {
            match v.get(name) {
                None | Some(serde_json::Value::Null) if !required => Ok(0),
                None | Some(serde_json::Value::Null) => Err(format!("usage has no {name}")),
                Some(n) => n
                    .as_u64()
                    .ok_or_else(|| format!("usage {name} is {n}, not a whole number of tokens")),
            }
        };
        if !usage.is_object() {
            return Err("usage is not an object".into());
        }
        let mut write_1h = 0u64;
        if let Some(details) = usage.get("cacheDetails").filter(|d| !d.is_null()) {
            let details = details.as_array().ok_or("usage cacheDetails is not a list")?;
            for detail in details {
                let tokens = count(detail, "inputTokens", true)?;
                match detail.get("ttl").and_then(serde_json::Value::as_str) {
                    Some("1h") => write_1h = write_1h.saturating_add(tokens),
                    Some("5m") => {}
                    _ => return Err(format!("usage cacheDetails has an unknown ttl: {detail}")),
                }
            }
        }
        Ok(Usage {
            input_tokens: count(usage, "inputTokens", true)?,
            output_tokens: count(usage, "outputTokens", true)?,
            cache_read_input_tokens: count(usage, "cacheReadInputTokens", false)?,
            cache_write_input_tokens: count(usage, "cacheWriteInputTokens", false)?,
            cache_write_1h_input_tokens: write_1h,
        })
    }

    /// Every prompt token the model read, cached or not: what an input
    /// estimate should be compared with (`inputTokens` alone excludes cache
    /// reads and writes), and what a long-context tier is judged by.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_write_input_tokens.max(self.cache_write_1h_input_tokens))
    }

    /// Cache writes at the 5-minute TTL: the rest of the writes after the 1-hour ones.
    pub fn cache_write_5m_tokens(&self) -> u64 {
        self.cache_write_input_tokens
            .saturating_sub(self.cache_write_1h_input_tokens)
    }
}

/// A model's effective prices, nano-dollars per million tokens, with the
/// catalog's defaults filled in and any prefix premium applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
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
        let write_5m = usage.cache_write_5m_tokens();
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
    pub(super) fn with_premium(self, bp: u32) -> Price {
        self.scaled(BP_PER_UNIT + u128::from(bp), BP_PER_UNIT)
    }

    /// Every price times `bp` basis points (10000 = unchanged), each rounded up.
    pub(super) fn times_bp(self, bp: u32) -> Price {
        self.scaled(u128::from(bp), BP_PER_UNIT)
    }

    /// Every price times `num / den`, each rounded up: exact for the
    /// published multipliers, and never below them.
    pub(super) fn scaled(self, num: u128, den: u128) -> Price {
        if num == den || den == 0 {
            return self;
        }
        let scale = |p: NanoUsd| {
            let scaled = (u128::from(p.get()) * num).div_ceil(den);
            NanoUsd(u64::try_from(scaled).unwrap_or(u64::MAX))
        };
        Price {
            input: scale(self.input),
            output: scale(self.output),
            cache_read: scale(self.cache_read),
            cache_write_5m: scale(self.cache_write_5m),
            cache_write_1h: scale(self.cache_write_1h),
        }
    }
}

impl From<Price> for ModelPrice {
    fn from(p: Price) -> Self {
        ModelPrice {
            input: p.input.get(),
            output: p.output.get(),
            cache_read: p.cache_read.get(),
            cache_write: p.cache_write_5m.get(),
            cache_write_long: p.cache_write_1h.get(),
        }
    }
}

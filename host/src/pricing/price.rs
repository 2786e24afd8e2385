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
    pub(super) fn with_premium(self, bp: u32) -> Price {
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

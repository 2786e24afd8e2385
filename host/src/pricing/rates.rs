//! Every price one model may bill at, resolved for a region and prefix, and
//! the charge of a metered call against them: the formula AWS bills by.

use serde::{Deserialize, Serialize};

use super::metered::{LatencyMode, Metered, ServedAs, ServiceTier};
use super::price::{BP_PER_UNIT, Price, Usage};
use crate::money::NanoUsd;

/// Basis points of the standard price per service tier; `None` where the
/// catalog names no price for that tier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierBp {
    pub priority: Option<u32>,
    pub flex: Option<u32>,
    pub reserved: Option<u32>,
}

impl TierBp {
    pub fn get(&self, tier: ServiceTier) -> Option<u32> {
        match tier {
            ServiceTier::Standard => Some(BP_PER_UNIT as u32),
            ServiceTier::Priority => self.priority,
            ServiceTier::Flex => self.flex,
            ServiceTier::Reserved => self.reserved,
        }
    }
}

/// A model's prices for one region and prefix, premiums applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    pub standard: Price,
    /// `(above_input_tokens, prices)`: the whole call's prices once its prompt passes the size.
    pub long_context: Option<(u64, Price)>,
    pub latency_optimized: Option<Price>,
    pub tiers: TierBp,
}

/// A call's charge with everything needed to reproduce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Charge {
    pub cost: NanoUsd,
    /// The per-million prices applied, tier and tiers included.
    pub unit_prices: Price,
    pub served_as: ServedAs,
    /// The prompt passed the long-context size: every token at that tier.
    pub long_context: bool,
}

impl Rates {
    /// What `metered` costs, or why it cannot be priced.
    pub fn charge(&self, metered: &Metered) -> Result<Charge, String> {
        let (unit_prices, long_context) = self.unit_prices(metered.served_as, metered.usage.prompt_tokens())?;
        Ok(Charge {
            cost: unit_prices.cost(&metered.usage),
            unit_prices,
            served_as: metered.served_as,
            long_context,
        })
    }

    /// The prices a call served as `served_as` with `prompt_tokens` of prompt pays.
    pub fn unit_prices(&self, served_as: ServedAs, prompt_tokens: u64) -> Result<(Price, bool), String> {
        let mut price = match served_as.latency {
            LatencyMode::Standard => self.standard,
            LatencyMode::Optimized => self
                .latency_optimized
                .ok_or("the catalog has no latency-optimized price for this model")?,
        };
        let long = self.long_context.filter(|(above, _)| prompt_tokens > *above);
        if let Some((_, long_price)) = long {
            price = long_price;
        }
        let bp = self.tiers.get(served_as.tier).ok_or_else(|| {
            format!(
                "the catalog has no price for the {} service tier of this model",
                served_as.tier.as_str()
            )
        })?;
        Ok((price.times_bp(bp), long.is_some()))
    }

    /// The dearest prices a call asked to be served as `asked` may pay, with
    /// a prompt of about `prompt_tokens`: what its hold is priced at. The
    /// long-context tier counts from half its size, since the estimate may
    /// be low; flex and reserved calls may spill to the standard tier.
    pub fn worst(&self, asked: ServedAs, prompt_tokens: u64) -> Result<Price, String> {
        let mut price = self.standard;
        if asked.latency == LatencyMode::Optimized
            && let Some(optimized) = self.latency_optimized
        {
            price = dearest(price, optimized);
        }
        if let Some((above, long)) = self.long_context
            && prompt_tokens.saturating_mul(2) > above
        {
            price = dearest(price, long);
        }
        let bp = self.tiers.get(asked.tier).ok_or_else(|| {
            format!(
                "the catalog has no price for the {} service tier of this model; ask for another tier or price it \
                 under service_tier_bp in the pricing file",
                asked.tier.as_str()
            )
        })?;
        Ok(price.times_bp(bp.max(BP_PER_UNIT as u32)))
    }
}

impl Rates {
    /// What to hold for a call asked to be served as `asked`: `input_tokens`
    /// of prompt (billed as the dearest cache write when `caching`) and
    /// `max_output` of output, at the dearest prices that may apply.
    pub fn hold(&self, asked: ServedAs, input_tokens: u64, max_output: u64, caching: bool) -> Result<NanoUsd, String> {
        Ok(hold_cost(
            self.worst(asked, input_tokens)?,
            input_tokens,
            max_output,
            caching,
        ))
    }
}

/// Each price the higher of the two.
fn dearest(a: Price, b: Price) -> Price {
    Price {
        input: a.input.max(b.input),
        output: a.output.max(b.output),
        cache_read: a.cache_read.max(b.cache_read),
        cache_write_5m: a.cache_write_5m.max(b.cache_write_5m),
        cache_write_1h: a.cache_write_1h.max(b.cache_write_1h),
    }
}

/// What to reserve for `input_tokens` of prompt and `max_output` of output
/// at `price`; with cache points, the prompt may be billed as cache writes.
pub fn hold_cost(price: Price, input_tokens: u64, max_output: u64, caching: bool) -> NanoUsd {
    let input = if caching {
        price.input.max(price.cache_write_5m).max(price.cache_write_1h)
    } else {
        price.input
    };
    Price { input, ..price }.cost(&Usage {
        input_tokens,
        output_tokens: max_output,
        ..Usage::default()
    })
}

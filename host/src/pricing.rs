//! Model prices as policies see them through the `price` host import.
//!
//! The engine asks a [`PriceBook`]; the embedder decides where prices come
//! from. [`StaticPrices`] is a fixed table, enough for tests, examples and
//! embedders that keep their own catalog.

use std::collections::HashMap;

use crate::contract::ModelPrice;
use crate::ids::ModelId;

/// Looks up the on-demand price of a model id. Called on the decision path,
/// so it must be cheap and must not block.
pub trait PriceBook: Send + Sync + 'static {
    /// Nano-dollars per million tokens, or `None` for an unknown model.
    fn price(&self, model_id: &str) -> Option<ModelPrice>;
}

/// A fixed table of prices by base model id. Regional profile ids
/// (`us.…`) resolve to their base model.
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
        let model = ModelId::new(model_id);
        self.by_model.get(model.without_region_prefix()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_regional_profiles_and_refuses_unknown_models() {
        let prices = StaticPrices::examples();
        let base = prices.price("amazon.nova-micro-v1:0").expect("known");
        assert_eq!(prices.price("us.amazon.nova-micro-v1:0"), Some(base));
        assert_eq!(prices.price("acme.unknown-model"), None);
    }
}

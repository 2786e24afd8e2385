//! A fixed price table, for tests and examples that need no catalog.

use std::collections::HashMap;

use super::price::PriceBook;
use crate::contract::ModelPrice;
use crate::ids::split_region_prefix;

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
            cache_write_long: input * 2,
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

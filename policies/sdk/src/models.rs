//! The models a call could go to (`request.requested` and
//! `request.downgrade-chain`), each priced by the host for this very call,
//! and the names of the call's tier and latency mode.

use crate::{CacheLocation, CacheTtl, LatencyMode, ModelOption, NanoUsd, Request, ServiceTier};

/// The cheapest entry of `request.downgrade_chain` whose worst case is
/// strictly below the requested model's (an unpriced requested model counts
/// as dearer than any priced one); the first of equals on a tie. Unpriced
/// entries are skipped: the host would refuse a downgrade to them.
pub fn cheapest_downgrade(request: &Request) -> Option<&ModelOption> {
    let ceiling = request.requested.worst_case_cost;
    let mut best: Option<(&ModelOption, NanoUsd)> = None;
    for option in &request.downgrade_chain {
        let Some(cost) = option.worst_case_cost else {
            continue;
        };
        if ceiling.is_some_and(|c| cost >= c) {
            continue;
        }
        if best.is_none_or(|(_, b)| cost < b) {
            best = Some((option, cost));
        }
    }
    best.map(|(option, _)| option)
}

impl Request {
    /// See [`cheapest_downgrade`].
    pub fn cheapest_downgrade(&self) -> Option<&ModelOption> {
        cheapest_downgrade(self)
    }
}

impl ModelOption {
    /// Whether this model's worst case for the call is known and strictly
    /// below `cost`.
    pub fn costs_less_than(&self, cost: NanoUsd) -> bool {
        self.worst_case_cost.is_some_and(|c| c < cost)
    }
}

impl ServiceTier {
    /// "standard", "priority", "flex" or "reserved".
    pub fn name(self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Priority => "priority",
            ServiceTier::Flex => "flex",
            ServiceTier::Reserved => "reserved",
        }
    }
}

impl LatencyMode {
    /// "standard" or "optimized".
    pub fn name(self) -> &'static str {
        match self {
            LatencyMode::Standard => "standard",
            LatencyMode::Optimized => "optimized",
        }
    }
}

impl CacheLocation {
    /// "system", "messages" or "tools".
    pub fn name(self) -> &'static str {
        match self {
            CacheLocation::System => "system",
            CacheLocation::Messages => "messages",
            CacheLocation::Tools => "tools",
        }
    }
}

impl CacheTtl {
    /// "5m" or "1h", as Bedrock spells them.
    pub fn name(self) -> &'static str {
        match self {
            CacheTtl::FiveMinutes => "5m",
            CacheTtl::OneHour => "1h",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Operation, Request};

    fn option(model_id: &str, worst_case_cost: Option<NanoUsd>) -> ModelOption {
        ModelOption {
            model_id: model_id.into(),
            price: None,
            worst_case_cost,
        }
    }

    fn request(requested: Option<NanoUsd>, chain: Vec<ModelOption>) -> Request {
        Request {
            request_id: "r".into(),
            tenant_id: "t".into(),
            user_id: String::new(),
            use_case: String::new(),
            operation: Operation::Converse,
            model_id: "asked".into(),
            base_model_id: "asked".into(),
            estimated_input_tokens: 1000,
            max_output_tokens: 1000,
            worst_case_cost: requested.unwrap_or(0),
            metadata: Vec::new(),
            now_ms: 0,
            config: String::new(),
            service_tier: ServiceTier::Standard,
            latency_mode: LatencyMode::Standard,
            cache_points: Vec::new(),
            requested: option("asked", requested),
            downgrade_chain: chain,
        }
    }

    fn pick(r: &Request) -> Option<&str> {
        cheapest_downgrade(r).map(|o| o.model_id.as_str())
    }

    #[test]
    fn picks_the_cheapest_strictly_cheaper_entry() {
        let chain = vec![
            option("sonnet", Some(18_000_000)),
            option("unpriced", None),
            option("haiku", Some(4_800_000)),
            option("micro", Some(175_000)),
            option("micro-again", Some(175_000)),
        ];
        assert_eq!(pick(&request(Some(4_800_000), chain.clone())), Some("micro"));
        assert_eq!(pick(&request(None, chain.clone())), Some("micro"));
        assert_eq!(
            pick(&request(Some(175_000), chain.clone())),
            None,
            "equal is not cheaper"
        );
        assert_eq!(pick(&request(Some(175_001), chain)), Some("micro"));
        assert_eq!(pick(&request(None, vec![option("unpriced", None)])), None);
        assert_eq!(pick(&request(Some(1), Vec::new())), None);
    }

    #[test]
    fn names() {
        assert_eq!(ServiceTier::Flex.name(), "flex");
        assert_eq!(LatencyMode::Optimized.name(), "optimized");
        assert_eq!(CacheLocation::Tools.name(), "tools");
        assert_eq!(CacheTtl::OneHour.name(), "1h");
        assert!(option("m", Some(5)).costs_less_than(6));
        assert!(!option("m", Some(6)).costs_less_than(6));
        assert!(!option("m", None).costs_less_than(u64::MAX));
    }
}

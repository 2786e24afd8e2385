//! What contract 0.2.0 tells a policy about the call's choices: the tier
//! and latency mode it asked for, its cache points, and the requested model
//! and the version's downgrade chain, each priced for this call exactly as
//! the gateway would hold it (so a policy comparing options compares what
//! the budget check will compare).

use serde_json::{Map, Value};

use crate::contract::{CacheLocation, CachePoint, CacheTtl, ModelOption, Request};
use crate::pricing::Rates;

use super::verdict_check::VerdictCheck;

/// Cache points listed to a policy; Bedrock allows far fewer per request.
const MAX_CACHE_POINTS: usize = 64;

/// Fills the 0.2.0 fields of `request` for a call with this `body`.
pub(super) fn complete(
    request: &mut Request,
    body: &Map<String, Value>,
    check: &VerdictCheck<'_>,
    requested_rates: &Rates,
    chain: &[String],
) {
    request.service_tier = check.asked.tier.into();
    request.latency_mode = check.asked.latency.into();
    request.cache_points = cache_points(body);
    // The requested model was resolved and held already; price it from that.
    request.requested = ModelOption {
        model_id: request.model_id.clone(),
        price: requested_rates
            .unit_prices(check.asked, check.input_tokens)
            .ok()
            .map(|(price, _)| price.into()),
        worst_case_cost: Some(check.requested_worst.get()),
    };
    request.downgrade_chain = chain_options(check, chain);
}

/// The models of a version's downgrade chain, each priced for this call.
pub(super) fn chain_options(check: &VerdictCheck<'_>, chain: &[String]) -> Vec<ModelOption> {
    chain
        .iter()
        .map(|model| {
            check.catalog.option(
                model,
                check.input_tokens,
                check.max_output,
                check.uses_prompt_cache,
                check.asked,
            )
        })
        .collect()
}

/// Every `cachePoint` block of a Converse body, in document order: system,
/// then messages, then tools.
pub(super) fn cache_points(body: &Map<String, Value>) -> Vec<CachePoint> {
    let system = blocks(body.get("system")).iter().map(|b| (CacheLocation::System, b));
    let messages = blocks(body.get("messages"))
        .iter()
        .flat_map(|m| blocks(m.get("content")))
        .map(|b| (CacheLocation::Messages, b));
    let tools = blocks(body.get("toolConfig").and_then(|c| c.get("tools")))
        .iter()
        .map(|b| (CacheLocation::Tools, b));
    system
        .chain(messages)
        .chain(tools)
        .filter_map(|(location, block)| {
            let point = block.get("cachePoint")?;
            let ttl = match point.get("ttl").and_then(Value::as_str) {
                Some("1h") => CacheTtl::OneHour,
                _ => CacheTtl::FiveMinutes,
            };
            Some(CachePoint { location, ttl })
        })
        .take(MAX_CACHE_POINTS)
        .collect()
}

fn blocks(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_points_are_listed_in_order_with_their_ttl() {
        let body = serde_json::json!({
            "system": [{"text": "s"}, {"cachePoint": {"type": "default"}}],
            "messages": [
                {"role": "user", "content": [{"text": "a"}, {"cachePoint": {"type": "default", "ttl": "1h"}}]},
                {"role": "user", "content": "not a list"}
            ],
            "toolConfig": {"tools": [{"toolSpec": {}}, {"cachePoint": {"type": "default"}}]}
        });
        let Value::Object(body) = body else { unreachable!() };
        let points = cache_points(&body);
        assert_eq!(
            points,
            vec![
                CachePoint {
                    location: CacheLocation::System,
                    ttl: CacheTtl::FiveMinutes
                },
                CachePoint {
                    location: CacheLocation::Messages,
                    ttl: CacheTtl::OneHour
                },
                CachePoint {
                    location: CacheLocation::Tools,
                    ttl: CacheTtl::FiveMinutes
                },
            ]
        );
        assert!(cache_points(&Map::new()).is_empty());
    }
}

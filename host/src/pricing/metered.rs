//! What AWS meters for one call, read from its response: the token counts
//! (cache writes split by TTL), the service tier that served it, and whether
//! it ran latency-optimized. A Converse response and a stream's final
//! metadata event carry the same three fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::price::Usage;

/// The processing tier that served a call (`serviceTier.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceTier {
    /// Bedrock's `default`: the standard on-demand price.
    #[default]
    #[serde(rename = "default")]
    Standard,
    Priority,
    Flex,
    Reserved,
}

impl ServiceTier {
    pub const ALL: [ServiceTier; 4] = [
        ServiceTier::Standard,
        ServiceTier::Priority,
        ServiceTier::Flex,
        ServiceTier::Reserved,
    ];

    /// Bedrock's name for the tier.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Standard => "default",
            ServiceTier::Priority => "priority",
            ServiceTier::Flex => "flex",
            ServiceTier::Reserved => "reserved",
        }
    }

    pub fn parse(name: &str) -> Option<ServiceTier> {
        ServiceTier::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl From<ServiceTier> for crate::contract::ServiceTier {
    fn from(tier: ServiceTier) -> Self {
        match tier {
            ServiceTier::Standard => crate::contract::ServiceTier::Standard,
            ServiceTier::Priority => crate::contract::ServiceTier::Priority,
            ServiceTier::Flex => crate::contract::ServiceTier::Flex,
            ServiceTier::Reserved => crate::contract::ServiceTier::Reserved,
        }
    }
}

/// `performanceConfig.latency`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyMode {
    #[default]
    Standard,
    Optimized,
}

impl LatencyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LatencyMode::Standard => "standard",
            LatencyMode::Optimized => "optimized",
        }
    }
}

impl From<LatencyMode> for crate::contract::LatencyMode {
    fn from(mode: LatencyMode) -> Self {
        match mode {
            LatencyMode::Standard => crate::contract::LatencyMode::Standard,
            LatencyMode::Optimized => crate::contract::LatencyMode::Optimized,
        }
    }
}

/// How a call asked to be (or was) served: its tier and latency mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServedAs {
    pub tier: ServiceTier,
    pub latency: LatencyMode,
}

impl ServedAs {
    /// Reads `serviceTier` and `performanceConfig` of a request or response
    /// object; a missing field is `fallback`'s. An unknown value is an error:
    /// tollgate cannot price what it cannot name.
    pub fn read(object: &Value, fallback: ServedAs) -> Result<ServedAs, String> {
        let tier = match object.get("serviceTier") {
            None | Some(Value::Null) => fallback.tier,
            Some(v) => match v.get("type").and_then(Value::as_str) {
                Some(name) => ServiceTier::parse(name).ok_or_else(|| {
                    format!(
                        "serviceTier.type {:?} is not one of default, priority, flex, reserved",
                        crate::text::clip(name, 64)
                    )
                })?,
                None => return Err("serviceTier has no string \"type\"".into()),
            },
        };
        let latency = match object.get("performanceConfig") {
            None | Some(Value::Null) => fallback.latency,
            Some(v) => match v.get("latency").and_then(Value::as_str) {
                None => fallback.latency,
                Some("standard") => LatencyMode::Standard,
                Some("optimized") => LatencyMode::Optimized,
                Some(other) => {
                    return Err(format!(
                        "performanceConfig.latency {:?} is not standard or optimized",
                        crate::text::clip(other, 64)
                    ));
                }
            },
        };
        Ok(ServedAs { tier, latency })
    }
}

/// Everything AWS bills a call by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metered {
    pub usage: Usage,
    pub served_as: ServedAs,
}

impl Metered {
    /// Reads a Converse response, or a stream's metadata event. `asked` is
    /// what the request asked for, used where the response is silent. An
    /// `Err` means the figures cannot be trusted, and the hold is charged.
    pub fn from_response(response: &Value, asked: ServedAs) -> Result<Metered, String> {
        let usage = response
            .get("usage")
            .ok_or_else(|| "the response has no usage object".to_owned())
            .and_then(Usage::read)?;
        let served_as = ServedAs::read(response, asked)?;
        Ok(Metered { usage, served_as })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_usage_tier_and_latency_of_a_response() {
        let response = json!({
            "usage": {
                "inputTokens": 10, "outputTokens": 20, "totalTokens": 2030,
                "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 1000,
                "cacheDetails": [{"ttl": "1h", "inputTokens": 600}, {"ttl": "5m", "inputTokens": 400}]
            },
            "serviceTier": {"type": "priority"},
            "performanceConfig": {"latency": "optimized"}
        });
        let m = Metered::from_response(&response, ServedAs::default()).expect("readable");
        assert_eq!(m.usage.cache_write_input_tokens, 1000);
        assert_eq!(m.usage.cache_write_1h_input_tokens, 600);
        assert_eq!(m.served_as.tier, ServiceTier::Priority);
        assert_eq!(m.served_as.latency, LatencyMode::Optimized);
        // Silent on tier and latency: what was asked for.
        let asked = ServedAs {
            tier: ServiceTier::Flex,
            latency: LatencyMode::Standard,
        };
        let m =
            Metered::from_response(&json!({"usage": {"inputTokens": 1, "outputTokens": 2}}), asked).expect("readable");
        assert_eq!(m.served_as, asked);
    }

    #[test]
    fn what_cannot_be_read_is_an_error_so_the_hold_is_charged() {
        for bad in [
            json!({}),
            json!({"usage": {"prompt_tokens": 5, "completion_tokens": 7}}),
            json!({"usage": {"inputTokens": -1, "outputTokens": 7}}),
            json!({"usage": {"inputTokens": 1, "outputTokens": 7, "cacheReadInputTokens": "9"}}),
            json!({"usage": {"inputTokens": 1, "outputTokens": 7, "cacheDetails": [{"ttl": "2h", "inputTokens": 1}]}}),
            json!({"usage": {"inputTokens": 1, "outputTokens": 7}, "serviceTier": {"type": "platinum"}}),
            json!({"usage": {"inputTokens": 1, "outputTokens": 7}, "performanceConfig": {"latency": "ludicrous"}}),
        ] {
            assert!(Metered::from_response(&bad, ServedAs::default()).is_err(), "{bad}");
        }
    }
}

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

    /// As [`Self::from_response`], from a Converse response's bytes. Only
    /// the three billed fields are built; the output message, most of a
    /// response, is checked as JSON and skipped.
    pub fn from_response_bytes(bytes: &[u8], asked: ServedAs) -> Result<Metered, String> {
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            // Not an object (which a struct would also read from an array):
            // read whole, for the same answer as any other response.
            let whole: Value = serde_json::from_slice(bytes).map_err(|e| format!("the response is not JSON: {e}"))?;
            return Metered::from_response(&whole, asked);
        }
        let billed: BilledFields =
            serde_json::from_slice(bytes).map_err(|e| format!("the response is not JSON: {e}"))?;
        let mut fields = serde_json::Map::new();
        for (name, value) in [
            ("usage", billed.usage),
            ("serviceTier", billed.service_tier),
            ("performanceConfig", billed.performance_config),
        ] {
            if let Some(value) = value {
                fields.insert(name.to_owned(), value);
            }
        }
        Metered::from_response(&Value::Object(fields), asked)
    }
}

/// The fields of a response a charge is read from; a field present as
/// `null` stays present, as it is in the whole response.
#[derive(Deserialize)]
struct BilledFields {
    #[serde(default, deserialize_with = "present")]
    usage: Option<Value>,
    #[serde(default, rename = "serviceTier", deserialize_with = "present")]
    service_tier: Option<Value>,
    #[serde(default, rename = "performanceConfig", deserialize_with = "present")]
    performance_config: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
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

    #[test]
    fn the_bytes_read_as_the_whole_response_does() {
        let asked = ServedAs {
            tier: ServiceTier::Flex,
            latency: LatencyMode::Standard,
        };
        for text in [
            r#"{"output":{"message":{"role":"assistant","content":[{"text":"hi \"there\""}]}},"stopReason":"end_turn","usage":{"inputTokens":10,"outputTokens":20,"totalTokens":30},"metrics":{"latencyMs":5}}"#,
            r#"{"usage":{"inputTokens":1,"outputTokens":2,"cacheWriteInputTokens":3,"cacheDetails":[{"ttl":"1h","inputTokens":3}]},"serviceTier":{"type":"priority"},"performanceConfig":{"latency":"optimized"}}"#,
            r#"{"usage":{"inputTokens":1,"outputTokens":2},"serviceTier":null}"#,
            r#"{"usage":{"inputTokens":1,"outputTokens":2},"performanceConfig":{"latency":"ludicrous"}}"#,
            r#"{"usage":null}"#,
            r#"{"output":{}}"#,
            r#"{}"#,
            r#"[]"#,
            r#"[{"inputTokens":1,"outputTokens":2}]"#,
            r#"7"#,
            r#"{"usage":{"inputTokens":1,"outputTokens":2}"#,
            "",
        ] {
            let whole = serde_json::from_slice::<Value>(text.as_bytes())
                .map_err(|e| format!("the response is not JSON: {e}"))
                .and_then(|v| Metered::from_response(&v, asked));
            let lean = Metered::from_response_bytes(text.as_bytes(), asked);
            assert_eq!(lean.is_ok(), whole.is_ok(), "{text}: {lean:?} against {whole:?}");
            if let (Ok(lean), Ok(whole)) = (lean, whole) {
                assert_eq!(lean, whole, "{text}");
            }
        }
    }
}

//! Bedrock's own model-invocation log, as AWS writes it to S3: one JSON
//! record per line (`schemaType`, `timestamp`, `region`, `modelId`, token
//! counts under `input` and `output`, `requestMetadata`, ...).
//!
//! Bedrock does not log a price, so each record is priced with the catalog
//! in its own `region` (AWS bills by the region a call is sent to):
//! `inputTokenCount` is the input that was neither read from nor written to
//! a cache, as in the Converse response's `usage`; cache writes count at
//! the 5-minute price unless the logged response's `usage.cacheDetails`
//! splits them by TTL; the service tier and latency mode come from the
//! logged response, then the request. The tenant, user, use case and
//! decision are the `tollgate-*` pairs tollgate forwards in
//! `requestMetadata`; calls made around tollgate have none.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use tollgate_host::pricing::{Metered, ServedAs, Usage};

use super::filter::parse_timestamp;
use super::group::{Call, Savings, Tokens};
use super::prices::Prices;
use super::tollgate_log::Pairs;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line<'a> {
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(default, borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model_id: Cow<'a, str>,
    #[serde(default)]
    input: Input,
    #[serde(default)]
    output: Output,
    #[serde(default)]
    performance_config: Option<Value>,
    #[serde(default, borrow)]
    request_metadata: Pairs<'a>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Input {
    input_token_count: Option<u64>,
    cache_read_input_token_count: Option<u64>,
    cache_write_input_token_count: Option<u64>,
    #[serde(default)]
    input_body_json: Option<MaybeBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Output {
    output_token_count: Option<u64>,
    #[serde(default)]
    output_body_json: Option<MaybeBody>,
}

/// A logged body is an object for Converse, but a list of events for a
/// stream and may be anything for other operations: only an object is read.
#[derive(Deserialize)]
#[serde(untagged)]
enum MaybeBody {
    Object(Body),
    Other(IgnoredAny),
}

impl MaybeBody {
    fn object(&self) -> Option<&Body> {
        match self {
            MaybeBody::Object(body) => Some(body),
            MaybeBody::Other(_) => None,
        }
    }
}

/// The parts of a logged request or response body that change its price;
/// the prompt and reply themselves are skipped unread.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Body {
    service_tier: Option<Value>,
    performance_config: Option<Value>,
    usage: Option<Value>,
}

/// Parses one line; the error says what is wrong with it.
pub fn parse(line: &str) -> Result<Line<'_>, String> {
    serde_json::from_str(line).map_err(|e| e.to_string())
}

impl<'a> Line<'a> {
    /// The call the line records, priced. `Err` is a record that cannot be
    /// read; a model without a price is a call with no `cost`, and `unpriced`
    /// gets why.
    pub fn call(&'a self, prices: &mut Prices, unpriced: &mut Option<String>) -> Result<Call<'a>, String> {
        let metered = self.metered()?;
        let region = self.region.as_deref();
        let cost = match prices.charge(region, &self.model_id, &metered) {
            Ok(cost) => Some(cost),
            Err(why) => {
                *unpriced = Some(why);
                None
            }
        };
        let pairs = &self.request_metadata;
        let decision = pairs.decision.as_deref().unwrap_or("");
        let savings = match (decision, &pairs.original_model, cost) {
            ("downgrade", Some(asked), Some(cost)) => match prices.charge(region, asked, &metered) {
                Ok(asked) => Savings::Saved(signed(asked) - signed(cost)),
                Err(_) => Savings::Unknown,
            },
            ("downgrade", _, _) => Savings::Unknown,
            _ => Savings::None,
        };
        let usage = metered.usage;
        Ok(Call {
            at: parse_timestamp(&self.timestamp)?,
            tenant: pairs.tenant.as_deref().unwrap_or(""),
            user: pairs.user.as_deref().unwrap_or(""),
            use_case: pairs.use_case.as_deref().unwrap_or(""),
            model: &self.model_id,
            decision,
            tokens: Tokens {
                input: usage.input_tokens,
                output: usage.output_tokens,
                cache_read: usage.cache_read_input_tokens,
                cache_write: usage.cache_write_input_tokens,
            },
            cost,
            savings,
        })
    }

    /// What AWS billed the call by.
    fn metered(&self) -> Result<Metered, String> {
        let request = self.input.input_body_json.as_ref().and_then(MaybeBody::object);
        let response = self.output.output_body_json.as_ref().and_then(MaybeBody::object);
        let mut served_as = ServedAs::default();
        // Least to most telling: the request's ask, then what the response says served it.
        for body in [request, response].into_iter().flatten() {
            served_as = ServedAs::read(&body.as_object(), served_as)?;
        }
        if let Some(config) = &self.performance_config {
            let mut top = Map::new();
            top.insert("performanceConfig".into(), config.clone());
            served_as = ServedAs::read(&Value::Object(top), served_as)?;
        }
        let mut usage = Usage {
            input_tokens: self.input.input_token_count.unwrap_or(0),
            output_tokens: self.output.output_token_count.unwrap_or(0),
            cache_read_input_tokens: self.input.cache_read_input_token_count.unwrap_or(0),
            cache_write_input_tokens: self.input.cache_write_input_token_count.unwrap_or(0),
            cache_write_1h_input_tokens: 0,
        };
        // Only a Converse response's usage splits the writes by TTL; a stream's
        // logged events, or a body left out of the log, do not.
        if let Some(logged) = response.and_then(|b| b.usage.as_ref())
            && let Ok(split) = Usage::read(logged)
        {
            usage.cache_write_1h_input_tokens = split.cache_write_1h_input_tokens;
        }
        Ok(Metered { usage, served_as })
    }
}

impl Body {
    fn as_object(&self) -> Value {
        let mut object = Map::new();
        for (key, value) in [
            ("serviceTier", &self.service_tier),
            ("performanceConfig", &self.performance_config),
        ] {
            if let Some(value) = value {
                object.insert(key.into(), value.clone());
            }
        }
        Value::Object(object)
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tollgate_host::pricing::Catalog;

    use super::*;

    fn priced(record: &Value) -> (Option<u64>, Option<String>) {
        let line = record.to_string();
        let parsed = parse(&line).expect("parses");
        let mut unpriced = None;
        let call = parsed
            .call(&mut Prices::new(Catalog::embedded()), &mut unpriced)
            .expect("call");
        (call.cost, unpriced)
    }

    fn nova_micro(input_body: Value, output_body: Value) -> Value {
        json!({
            "schemaType": "ModelInvocationLog", "timestamp": "2026-11-28T10:00:00Z", "region": "us-east-1",
            "operation": "ConverseStream", "modelId": "amazon.nova-micro-v1:0",
            "input": {"inputBodyJson": input_body, "inputTokenCount": 1000},
            "output": {"outputBodyJson": output_body, "outputTokenCount": 1000},
        })
    }

    #[test]
    fn the_tier_comes_from_the_response_then_the_request() {
        // Nova Micro, 1000 in and 1000 out: $0.035 + $0.14 per M = 175,000 n$ at the standard tier.
        let stream_events = json!([{"contentBlockDelta": {"delta": {"text": "Hi"}}}, {"metadata": {}}]);
        assert_eq!(priced(&nova_micro(json!({}), stream_events.clone())).0, Some(175_000));
        // Flex is half the standard price; priority 1.75 times it.
        let flex = json!({"serviceTier": {"type": "flex"}});
        assert_eq!(priced(&nova_micro(flex.clone(), stream_events)).0, Some(87_500));
        let served_priority = json!({"serviceTier": {"type": "priority"}});
        assert_eq!(priced(&nova_micro(flex, served_priority)).0, Some(306_250));
        // A body that is not JSON at all is read around.
        assert_eq!(priced(&nova_micro(json!("raw text"), json!(null))).0, Some(175_000));
    }

    #[test]
    fn an_unknown_model_or_region_is_a_call_without_a_price() {
        let mut record = nova_micro(json!({}), json!({}));
        record["modelId"] = json!("acme.house-model-v1");
        let (cost, why) = priced(&record);
        assert_eq!(cost, None);
        assert!(why.expect("why").contains("acme.house-model-v1"));
        let mut record = nova_micro(json!({}), json!({}));
        record["region"] = json!("mars-north-1");
        let (cost, why) = priced(&record);
        assert_eq!(cost, None);
        assert!(why.expect("why").contains("mars-north-1"));
    }
}

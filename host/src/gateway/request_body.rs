//! The caller's Converse body: parsed once into a JSON object, and the one
//! edit tollgate makes to it before forwarding (the reserved output cap).

use serde_json::{Map, Value};

use super::metadata;
use crate::upstream::error::BedrockError;

pub(super) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, BedrockError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(BedrockError::validation(format!(
            "Malformed input request: the body must be a JSON object as the Converse API defines it, not {}",
            metadata::json_kind(&other)
        ))),
        Err(e) => Err(BedrockError::validation(format!(
            "Malformed input request: the body is not valid JSON ({e}); send a Converse request body"
        ))),
    }
}

/// Sets `inferenceConfig.maxTokens` to the reserved output tokens, adding it if absent.
pub(super) fn set_max_tokens(body: &mut Map<String, Value>, cap: u64) {
    let config = body
        .entry("inferenceConfig")
        .or_insert_with(|| Value::Object(Map::new()));
    if !config.is_object() {
        *config = Value::Object(Map::new());
    }
    if let Value::Object(config) = config {
        config.insert("maxTokens".into(), Value::from(cap));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_must_be_json_objects() {
        let err = parse_body(b"{not json").expect_err("malformed");
        assert_eq!(err.error_type, "ValidationException");
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
        let err = parse_body(b"[1,2]").expect_err("array");
        assert!(err.message.contains("not an array"), "{}", err.message);
        assert!(parse_body(br#"{"messages":[]}"#).is_ok());
    }

    #[test]
    fn the_cap_lowers_or_adds_max_tokens_and_keeps_the_rest() {
        let mut body: Map<String, Value> =
            serde_json::from_str(r#"{"inferenceConfig":{"maxTokens":4096,"temperature":0.5}}"#).expect("json");
        set_max_tokens(&mut body, 256);
        assert_eq!(body["inferenceConfig"]["maxTokens"], 256);
        assert_eq!(body["inferenceConfig"]["temperature"], 0.5);
        let mut empty = Map::new();
        set_max_tokens(&mut empty, 100);
        assert_eq!(empty["inferenceConfig"]["maxTokens"], 100);
    }
}

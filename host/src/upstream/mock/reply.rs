//! The mock's answer to one request: a deterministic reply, and the usage
//! Bedrock would meter for it (prompt caching with its TTLs included), with
//! the request's service tier and latency mode echoed back.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::lock;

/// The deterministic answer to one request.
#[derive(Clone, Debug)]
pub(super) struct Reply {
    pub(super) text: String,
    pub(super) stop_reason: &'static str,
    pub(super) output_tokens: u64,
    pub(super) prompt: Prompt,
    /// What the response reports about how it was served: the request's
    /// `serviceTier` and `performanceConfig`, echoed as Bedrock does.
    pub(super) served: Map<String, Value>,
}

/// The prompt's text, cut at its cache points.
#[derive(Clone, Debug, Default)]
pub(super) struct Prompt {
    /// Each run of text ending at a cache point: its characters, the digest
    /// of the whole prefix up to that point, and the point's TTL.
    cached: Vec<(usize, u64, &'static str)>,
    /// Characters after the last cache point.
    tail_chars: usize,
}

/// Token counts of one answer, as Bedrock reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Counted {
    pub(super) input: u64,
    pub(super) output: u64,
    pub(super) cache_read: u64,
    pub(super) write_5m: u64,
    pub(super) write_1h: u64,
}

impl Counted {
    fn usage_json(&self, with_cache: bool) -> Value {
        let mut usage = json!({
            "inputTokens": self.input,
            "outputTokens": self.output,
            "totalTokens": self.input + self.output + self.cache_read + self.write_5m + self.write_1h,
        });
        if with_cache {
            usage["cacheReadInputTokens"] = json!(self.cache_read);
            usage["cacheWriteInputTokens"] = json!(self.write_5m + self.write_1h);
            let details: Vec<Value> = [("5m", self.write_5m), ("1h", self.write_1h)]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(ttl, n)| json!({"ttl": ttl, "inputTokens": n}))
                .collect();
            if !details.is_empty() {
                usage["cacheDetails"] = Value::Array(details);
            }
        }
        usage
    }
}

impl Reply {
    /// Counts the prompt against the cache, writing what it did not hold.
    pub(super) fn count(&self, cache: &Mutex<HashSet<u64>>) -> Counted {
        let mut counted = Counted {
            output: self.output_tokens,
            ..Counted::default()
        };
        let mut cache = lock(cache);
        for &(chars, key, ttl) in &self.prompt.cached {
            let tokens = tokens_for_chars(chars);
            if cache.contains(&key) {
                counted.cache_read += tokens;
            } else {
                cache.insert(key);
                match ttl {
                    "1h" => counted.write_1h += tokens,
                    _ => counted.write_5m += tokens,
                }
            }
        }
        counted.input = tokens_for_chars(self.prompt.tail_chars);
        if self.prompt.cached.is_empty() {
            counted.input = counted.input.max(1);
        }
        counted
    }

    /// The fields a response and a stream's metadata event share.
    pub(super) fn billing_fields(&self, counted: &Counted) -> Map<String, Value> {
        let mut fields = self.served.clone();
        fields.insert("usage".into(), counted.usage_json(!self.prompt.cached.is_empty()));
        fields
    }
}

/// Builds the reply, or a ValidationException message for a request Bedrock would refuse.
pub(super) fn compose_reply(model_id: &str, body: &Value) -> Result<Reply, String> {
    let Some(body) = body.as_object() else {
        return Err("Malformed input request: the body must be a JSON object.".into());
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("Malformed input request: messages is required and must be an array.".into());
    };
    let max_tokens = match body.get("inferenceConfig").and_then(|c| c.get("maxTokens")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => return Err("Malformed input request: inferenceConfig.maxTokens must be a positive integer.".into()),
        },
    };

    let mut prompt = Prompt::default();
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    model_id.hash(&mut digest);
    let mut walk = |block: &Value, prompt: &mut Prompt| {
        if let Some(text) = block.get("text").and_then(Value::as_str) {
            text.hash(&mut digest);
            prompt.tail_chars += text.chars().count();
        } else if let Some(point) = block.get("cachePoint") {
            let ttl = match point.get("ttl").and_then(Value::as_str) {
                Some("1h") => "1h",
                _ => "5m",
            };
            prompt.cached.push((prompt.tail_chars, digest.finish(), ttl));
            prompt.tail_chars = 0;
        }
    };
    if let Some(system) = body.get("system").and_then(Value::as_array) {
        for block in system {
            walk(block, &mut prompt);
        }
    }
    let mut last_user_text = String::new();
    for message in messages {
        let blocks = message.get("content").and_then(Value::as_array);
        for block in blocks.into_iter().flatten() {
            walk(block, &mut prompt);
        }
        if message.get("role").and_then(Value::as_str) == Some("user") {
            last_user_text = blocks
                .map(|b| {
                    b.iter()
                        .filter_map(|c| c.get("text")?.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
        }
    }
    let mut served = Map::new();
    for key in ["serviceTier", "performanceConfig"] {
        if let Some(value) = body.get(key).filter(|v| v.is_object()) {
            served.insert(key.to_owned(), value.clone());
        }
    }

    let words: Vec<&str> = last_user_text.split_whitespace().collect();
    let opening: Vec<&str> = words.iter().take(8).copied().collect();
    let ellipsis = if words.len() > opening.len() { "..." } else { "" };
    let full = format!(
        "Mock reply from {model_id}: you wrote {} words ({} characters), starting \"{}{ellipsis}\". \
         This answer is deterministic, so tests can rely on it.",
        words.len(),
        last_user_text.chars().count(),
        opening.join(" "),
    );
    let (text, stop_reason) = match max_tokens {
        // ~4 characters per token, so at most 4 × maxTokens characters.
        Some(max) if tokens_for_chars(full.chars().count()) > max => {
            let keep = usize::try_from(max.saturating_mul(4)).unwrap_or(usize::MAX);
            (full.chars().take(keep).collect(), "max_tokens")
        }
        _ => (full, "end_turn"),
    };
    Ok(Reply {
        output_tokens: tokens_for_chars(text.chars().count()),
        text,
        stop_reason,
        prompt,
        served,
    })
}

pub(super) fn tokens_for_chars(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

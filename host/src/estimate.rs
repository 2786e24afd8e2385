//! Input-token estimates of a Converse request, before it is sent.
//!
//! The ledger reserves a call's worst case before Bedrock has counted its
//! input, so the input size must be guessed. A character heuristic gives a
//! raw figure; every model's tokenizer differs from it, so the [`Estimator`]
//! learns a per-model correction from the input token counts that responses
//! report. The correction is an integer parts-per-million ratio packed with
//! its observation count into one `AtomicU64`: the request path takes a read
//! lock and does one atomic load, and no floats are involved.
//!
//! Requests are outside input: nothing here rejects or panics on a malformed
//! body (Bedrock validates it); parts it does not understand still count.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use serde_json::Value;

use crate::pricing::split_region_prefix;

/// Text is roughly four ASCII characters per token.
const UNITS_PER_TOKEN: u64 = 4;
/// A non-ASCII character costs more than a quarter token: CJK is about one
/// token each, accented Latin far less; 3 units splits the difference.
const NON_ASCII_UNITS: u64 = 3;
/// Role markers and separators around each message.
const MESSAGE_OVERHEAD: u64 = 4;
/// An image, whatever its size: Claude bills about 1600 tokens for a ~1.15
/// megapixel image, the size Bedrock models downscale to.
const IMAGE_TOKENS: u64 = 1_600;
/// A binary document (PDF, Word, Excel) whose text cannot be read cheaply.
const DOCUMENT_TOKENS: u64 = 3_000;
/// A video clip; a rough allowance, calibration cannot fix it per clip.
const VIDEO_TOKENS: u64 = 5_000;
/// The instructions a model is given when tools are offered at all.
const TOOLS_PREAMBLE: u64 = 300;
/// Framing around each tool definition.
const TOOL_OVERHEAD: u64 = 10;
/// Blocks nested deeper than this (not valid Converse) count by JSON size.
const MAX_DEPTH: usize = 4;

const PPM: u64 = 1_000_000;
/// Observations outside 1/8x..8x of the raw estimate are clamped: one odd
/// response must not wreck a model's calibration.
const MIN_RATIO_PPM: u64 = PPM / 8;
const MAX_RATIO_PPM: u64 = PPM * 8;
/// The moving average weighs the newest observation 1/n while n < this,
/// then 1/this: fast to learn a new model, steady afterwards.
const EWMA_WINDOW: u64 = 32;
/// Model ids come from requests; only ones Bedrock answered are observed,
/// but the table is capped anyway.
const MAX_MODELS: usize = 4_096;

/// Model maximum output tokens, used as `maxTokens` when a request leaves it
/// out: the worst case must assume the model may write that much. Matched by
/// id prefix, first match wins. Values as known in late 2025; an operator
/// corrects them with [`Estimator::with_default_max_output`].
const MAX_OUTPUT_BY_FAMILY: &[(&str, u64)] = &[
    ("anthropic.claude-3-haiku", 4_096),
    ("anthropic.claude-3-5-haiku", 8_192),
    ("anthropic.claude-3-7-sonnet", 64_000),
    ("anthropic.claude-opus-4-5", 64_000),
    ("anthropic.claude-opus-4", 32_000),
    ("anthropic.claude-sonnet-4", 64_000),
    ("anthropic.claude-haiku-4-5", 64_000),
    ("amazon.nova-premier", 32_000),
    ("amazon.nova-", 10_000),
    ("meta.llama4", 8_192),
    ("meta.llama", 2_048),
    ("mistral.", 8_192),
];
const FALLBACK_MAX_OUTPUT: u64 = 4_096;

/// An estimate of a request's input tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Estimate {
    /// The calibrated estimate: what to reserve for.
    pub input_tokens: u64,
    /// The uncalibrated heuristic; hand it back to [`Estimator::observe`].
    pub raw: u64,
    /// The request has cache points, so its input may be billed as cache writes.
    pub uses_prompt_cache: bool,
}

/// A model's learnt correction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Calibration {
    /// Real tokens per raw estimated token, in parts per million.
    pub ratio_ppm: u64,
    pub observations: u64,
}

impl Calibration {
    const NEUTRAL: Calibration = Calibration {
        ratio_ppm: PPM,
        observations: 0,
    };

    /// Count in the high half, ratio in the low half: one atomic word, so a
    /// reader never sees a ratio from one update and a count from another.
    fn pack(self) -> u64 {
        (self.observations.min(u64::from(u32::MAX)) << 32) | self.ratio_ppm.min(u64::from(u32::MAX))
    }

    fn unpack(word: u64) -> Calibration {
        Calibration {
            ratio_ppm: word & u64::from(u32::MAX),
            observations: word >> 32,
        }
    }

    /// Folds in one observed ratio.
    fn update(self, sample_ppm: u64) -> Calibration {
        let weight = (self.observations + 1).min(EWMA_WINDOW);
        let old = i128::from(self.ratio_ppm);
        let new = old + (i128::from(sample_ppm) - old) / i128::from(weight);
        Calibration {
            ratio_ppm: u64::try_from(new).unwrap_or(PPM).clamp(MIN_RATIO_PPM, MAX_RATIO_PPM),
            observations: self.observations.saturating_add(1),
        }
    }
}

/// Tokens a request's prompt can come to at most, whatever the model's
/// tokenizer: every token is at least one byte of the request (byte-level
/// BPE and byte-fallback vocabularies alike), plus the template tokens a
/// model adds around messages and tools, and the fixed cost of small images
/// and documents whose tokens can outnumber their bytes. `body_len` is the
/// request body's length in bytes.
pub fn input_token_ceiling(body_len: usize, request: &Value) -> u64 {
    let mut tally = Tally::default();
    tally.request(request);
    let media = tally
        .media_blocks
        .saturating_mul(IMAGE_TOKENS.max(DOCUMENT_TOKENS).max(VIDEO_TOKENS));
    // Media read from S3 has no bytes here: counted at a whole long context.
    let s3 = tally.s3_blocks.saturating_mul(S3_MEDIA_CEILING_TOKENS);
    let tools = if tally.has_tools { TOOLS_PREAMBLE * 4 } else { 0 };
    u64::try_from(body_len)
        .unwrap_or(u64::MAX)
        .saturating_add(CEILING_TEMPLATE_TOKENS)
        .saturating_add(tools)
        .saturating_add(media)
        .saturating_add(s3)
}

/// The ceiling's allowance for one image, document or video read from S3.
const S3_MEDIA_CEILING_TOKENS: u64 = 200_000;

/// Template tokens (roles, turn markers, a default system prompt) a request
/// may carry beyond its bytes.
const CEILING_TEMPLATE_TOKENS: u64 = 256;

/// Estimates input tokens and calibrates itself per model. Share it behind
/// `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Estimator {
    calibrations: RwLock<HashMap<String, AtomicU64>>,
    max_output_defaults: HashMap<String, u64>,
    /// Every estimate times this percentage, after calibration.
    scale_percent: u64,
}

impl Default for Estimator {
    fn default() -> Self {
        Self::new()
    }
}

impl Estimator {
    pub fn new() -> Self {
        Estimator {
            calibrations: RwLock::new(HashMap::new()),
            max_output_defaults: HashMap::new(),
            scale_percent: 100,
        }
    }

    /// Scales every input estimate, after calibration: above 100 makes holds
    /// more conservative; below 100 is for proving that the budget gate holds
    /// when estimates run low (the ceiling, not the estimate, bounds a call).
    pub fn with_scale_percent(mut self, percent: u64) -> Self {
        self.scale_percent = percent.max(1);
        self
    }

    /// Sets the output tokens assumed for `model_id` when a request gives no
    /// `inferenceConfig.maxTokens`.
    pub fn with_default_max_output(mut self, model_id: &str, tokens: u64) -> Self {
        self.max_output_defaults.insert(base_model(model_id).to_owned(), tokens);
        self
    }

    /// Estimates the input tokens of a Converse request body for `model_id`.
    pub fn estimate(&self, model_id: &str, request: &Value) -> Estimate {
        let mut tally = Tally::default();
        tally.request(request);
        let ratio = self.calibration(model_id).ratio_ppm;
        let calibrated = (u128::from(tally.tokens) * u128::from(ratio) * u128::from(self.scale_percent))
            .div_ceil(u128::from(PPM) * 100);
        Estimate {
            input_tokens: u64::try_from(calibrated).unwrap_or(u64::MAX),
            raw: tally.tokens,
            uses_prompt_cache: tally.cache_points,
        }
    }

    /// Learns from a response. `actual_input_tokens` must count every prompt
    /// token, cached or not ([`crate::pricing::Usage::prompt_tokens`]):
    /// Bedrock's `inputTokens` alone leaves out cache reads and writes.
    pub fn observe(&self, model_id: &str, raw_estimate: u64, actual_input_tokens: u64) {
        if raw_estimate == 0 || actual_input_tokens == 0 {
            return; // nothing to learn from, e.g. a failed call
        }
        let sample = (u128::from(actual_input_tokens) * u128::from(PPM)) / u128::from(raw_estimate);
        let sample = u64::try_from(sample)
            .unwrap_or(MAX_RATIO_PPM)
            .clamp(MIN_RATIO_PPM, MAX_RATIO_PPM);
        let key = base_model(model_id);
        let update = |cell: &AtomicU64| {
            let fold = |word| Some(Calibration::unpack(word).update(sample).pack());
            // The closure always returns Some, so this cannot fail.
            let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, fold);
        };
        if let Some(cell) = self.read().get(key) {
            update(cell);
            return;
        }
        let mut table = self.calibrations.write().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= MAX_MODELS && !table.contains_key(key) {
            return;
        }
        update(
            table
                .entry(key.to_owned())
                .or_insert_with(|| AtomicU64::new(Calibration::NEUTRAL.pack())),
        );
    }

    /// The correction currently applied to `model_id`.
    pub fn calibration(&self, model_id: &str) -> Calibration {
        self.read()
            .get(base_model(model_id))
            .map_or(Calibration::NEUTRAL, |cell| {
                Calibration::unpack(cell.load(Ordering::Acquire))
            })
    }

    /// The output tokens a request may produce: its
    /// `inferenceConfig.maxTokens`, else the model's default.
    pub fn max_output_tokens(&self, model_id: &str, request: &Value) -> u64 {
        request
            .get("inferenceConfig")
            .and_then(|c| c.get("maxTokens"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| self.default_max_output(model_id))
    }

    /// The output tokens assumed for `model_id` when a request sets no limit.
    pub fn default_max_output(&self, model_id: &str) -> u64 {
        let base = base_model(model_id);
        if let Some(&tokens) = self.max_output_defaults.get(base) {
            return tokens;
        }
        MAX_OUTPUT_BY_FAMILY
            .iter()
            .find(|(family, _)| base.starts_with(family))
            .map_or(FALLBACK_MAX_OUTPUT, |&(_, tokens)| tokens)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, AtomicU64>> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.calibrations.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `us.anthropic.…` and `anthropic.…` share one tokenizer.
fn base_model(model_id: &str) -> &str {
    split_region_prefix(model_id).1
}

/// Raw token counts of one request.
#[derive(Default)]
struct Tally {
    tokens: u64,
    cache_points: bool,
    /// Image, document and video blocks, for the ceiling.
    media_blocks: u64,
    /// Those whose bytes are in S3, not in the request.
    s3_blocks: u64,
    has_tools: bool,
}

impl Tally {
    fn add(&mut self, tokens: u64) {
        self.tokens = self.tokens.saturating_add(tokens);
    }

    fn request(&mut self, request: &Value) {
        for block in array(request.get("system")) {
            self.block(block, 0);
        }
        for message in array(request.get("messages")) {
            self.add(MESSAGE_OVERHEAD);
            for block in array(message.get("content")) {
                self.block(block, 0);
            }
        }
        let tools = array(request.get("toolConfig").and_then(|c| c.get("tools")));
        if !tools.is_empty() {
            self.add(TOOLS_PREAMBLE);
            self.has_tools = true;
        }
        for tool in tools {
            if tool.get("cachePoint").is_some() {
                self.cache_points = true;
            } else {
                // name, description and inputSchema.json, as the model reads them
                self.add(TOOL_OVERHEAD);
                self.add(json_tokens(tool.get("toolSpec").unwrap_or(tool)));
            }
        }
    }

    /// One content block of a message, a system prompt or a tool result.
    fn block(&mut self, block: &Value, depth: usize) {
        if depth > MAX_DEPTH {
            self.add(json_tokens(block));
            return;
        }
        let field = |name: &str| block.get(name);
        if let Some(media) = field("image").or_else(|| field("document")).or_else(|| field("video")) {
            self.media_blocks += 1;
            if media.pointer("/source/s3Location").is_some() {
                self.s3_blocks += 1;
            }
        }
        if let Some(text) = field("text").and_then(Value::as_str) {
            self.add(text_tokens(text));
        } else if field("image").is_some() {
            self.add(IMAGE_TOKENS);
        } else if let Some(doc) = field("document") {
            self.add(document_tokens(doc));
        } else if field("video").is_some() {
            self.add(VIDEO_TOKENS);
        } else if field("cachePoint").is_some() {
            self.cache_points = true;
        } else if let Some(json) = field("json") {
            self.add(json_tokens(json));
        } else if let Some(tool_use) = field("toolUse") {
            let name = tool_use.get("name").and_then(Value::as_str).unwrap_or("");
            self.add(text_tokens(name));
            self.add(tool_use.get("input").map_or(0, json_tokens));
        } else if let Some(result) = field("toolResult") {
            for inner in array(result.get("content")) {
                self.block(inner, depth + 1);
            }
        } else if let Some(reasoning) = field("reasoningContent") {
            match reasoning.pointer("/reasoningText/text").and_then(Value::as_str) {
                Some(text) => self.add(text_tokens(text)),
                None => self.add(json_tokens(reasoning)),
            }
        } else if let Some(guard) = field("guardContent") {
            match guard.pointer("/text/text").and_then(Value::as_str) {
                Some(text) => self.add(text_tokens(text)),
                None => self.block(guard, depth + 1),
            }
        } else {
            // Unknown block types still cost something.
            self.add(json_tokens(block));
        }
    }
}

fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Text documents are read by size; binary ones get the fixed allowance.
fn document_tokens(doc: &Value) -> u64 {
    let format = doc.get("format").and_then(Value::as_str).unwrap_or("");
    let source = doc.get("source");
    if let Some(text) = source.and_then(|s| s.get("text")).and_then(Value::as_str) {
        return text_tokens(text);
    }
    let is_text = matches!(format, "txt" | "md" | "csv" | "html");
    match source.and_then(|s| s.get("bytes")).and_then(Value::as_str) {
        // base64 in JSON: 4 characters carry 3 bytes.
        Some(b64) if is_text => (b64.len() as u64 / 4 * 3).div_ceil(UNITS_PER_TOKEN),
        _ => DOCUMENT_TOKENS,
    }
}

fn text_tokens(text: &str) -> u64 {
    let units: u64 = text
        .chars()
        .map(|c| if c.is_ascii() { 1 } else { NON_ASCII_UNITS })
        .sum();
    units.div_ceil(UNITS_PER_TOKEN)
}

/// JSON is counted by its compact serialised size, without building the string.
fn json_tokens(value: &Value) -> u64 {
    struct Counter(u64);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a Value to a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0.div_ceil(UNITS_PER_TOKEN)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CLAUDE: &str = "anthropic.claude-sonnet-4-20250514-v1:0";

    #[test]
    fn the_ceiling_bounds_the_prompt_by_its_bytes_and_scaling_lowers_the_estimate() {
        let text = "word ".repeat(1_000);
        let body = json!({"messages": [{"role": "user", "content": [{"text": text}]}]});
        let len = body.to_string().len();
        let ceiling = input_token_ceiling(len, &body);
        let estimate = Estimator::new().estimate(CLAUDE, &body).input_tokens;
        assert!(
            ceiling >= len as u64 && ceiling > estimate * 3,
            "{ceiling} vs {estimate}"
        );
        // Media in S3 has no bytes in the request: a whole long context each.
        let s3 = json!({"messages": [{"role": "user", "content": [
            {"document": {"format": "pdf", "name": "r", "source": {"s3Location": {"uri": "s3://b/k.pdf"}}}}
        ]}]});
        assert!(input_token_ceiling(s3.to_string().len(), &s3) >= 200_000);
        // Estimates scaled to 70% are 30% low.
        let low = Estimator::new()
            .with_scale_percent(70)
            .estimate(CLAUDE, &body)
            .input_tokens;
        assert_eq!(low, (estimate * 70).div_ceil(100));
    }

    #[test]
    fn counts_each_kind_of_block() {
        let est = Estimator::new();
        let text = "a".repeat(400); // 100 tokens
        let request = json!({
            "system": [{"text": "b".repeat(40)}, {"cachePoint": {"type": "default"}}],
            "messages": [
                {"role": "user", "content": [
                    {"text": text},
                    {"image": {"format": "png", "source": {"bytes": "AAAA"}}},
                    {"document": {"format": "pdf", "name": "d", "source": {"bytes": "AAAA"}}},
                ]},
                {"role": "assistant", "content": [
                    {"reasoningContent": {"reasoningText": {"text": "c".repeat(80)}}},
                    {"toolUse": {"toolUseId": "t1", "name": "get_wx", "input": {"city": "Paris"}}},
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"json": {"t": 21}}, {"text": "dddd"}]}},
                ]},
            ],
        });
        let e = est.estimate(CLAUDE, &request);
        // system 10 + 3 messages * 4 + text 100 + image 1600 + pdf 3000
        // + reasoning 20 + "get_wx" 2 + {"city":"Paris"} 4 + {"t":21} 2 + "dddd" 1
        assert_eq!(e.raw, 10 + 12 + 100 + 1600 + 3000 + 20 + 2 + 4 + 2 + 1);
        assert_eq!(e.input_tokens, e.raw, "uncalibrated");
        assert!(e.uses_prompt_cache);
    }

    #[test]
    fn counts_tool_definitions_by_json_size() {
        let spec =
            json!({"name": "lookup", "description": "Find a record", "inputSchema": {"json": {"type": "object"}}});
        let size = serde_json::to_string(&spec).expect("serialises").len() as u64;
        let request = json!({"messages": [], "toolConfig": {"tools": [{"toolSpec": spec}]}});
        let e = Estimator::new().estimate(CLAUDE, &request);
        assert_eq!(e.raw, TOOLS_PREAMBLE + TOOL_OVERHEAD + size.div_ceil(4));
        assert!(!e.uses_prompt_cache);
    }

    #[test]
    fn text_documents_count_by_size_and_non_ascii_costs_more() {
        let doc =
            |format: &str| json!({"document": {"format": format, "name": "n", "source": {"bytes": "A".repeat(4000)}}});
        let request = |block| json!({"messages": [{"role": "user", "content": [block]}]});
        let est = Estimator::new();
        // 4000 base64 chars = 3000 bytes = 750 tokens, plus the message overhead.
        assert_eq!(est.estimate(CLAUDE, &request(doc("txt"))).raw, 750 + 4);
        assert_eq!(est.estimate(CLAUDE, &request(doc("pdf"))).raw, DOCUMENT_TOKENS + 4);
        assert_eq!(text_tokens("日本語です"), 4); // 5 chars * 3 units / 4
        assert_eq!(text_tokens("abcd"), 1);
        assert_eq!(text_tokens(""), 0);
    }

    #[test]
    fn malformed_requests_still_estimate_without_panicking() {
        let est = Estimator::new();
        for body in [
            json!(null),
            json!([]),
            json!({"messages": "nope"}),
            json!({"messages": [{"content": [{"mystery": {"x": 1}}]}], "system": {"text": 1}}),
            json!({"messages": [{"content": [{"toolResult": {"content": [{"toolResult": {"content": [
                {"toolResult": {"content": [{"toolResult": {"content": [{"toolResult": {"content": [{"text": "x"}]}}]}}]}}
            ]}}]}}]}]}),
        ] {
            let e = est.estimate(CLAUDE, &body);
            assert!(e.input_tokens >= e.raw.min(1) || e.raw == 0, "{body}");
        }
        assert_eq!(est.estimate(CLAUDE, &json!({})).raw, 0);
    }

    #[test]
    fn max_output_comes_from_the_request_or_the_model_default() {
        let est = Estimator::new().with_default_max_output("acme.house-v1", 777);
        let with = json!({"inferenceConfig": {"maxTokens": 512}});
        assert_eq!(est.max_output_tokens(CLAUDE, &with), 512);
        assert_eq!(est.max_output_tokens(CLAUDE, &json!({})), 64_000);
        assert_eq!(
            est.max_output_tokens("us.anthropic.claude-3-haiku-20240307-v1:0", &json!({})),
            4_096
        );
        assert_eq!(
            est.max_output_tokens("anthropic.claude-opus-4-1-20250805-v1:0", &json!({})),
            32_000
        );
        assert_eq!(est.max_output_tokens("amazon.nova-micro-v1:0", &json!({})), 10_000);
        assert_eq!(est.max_output_tokens("eu.acme.house-v1", &json!({})), 777);
        assert_eq!(est.max_output_tokens("acme.other", &json!({})), FALLBACK_MAX_OUTPUT);
        // A nonsense maxTokens falls back; Bedrock will reject the request anyway.
        let bad = json!({"inferenceConfig": {"maxTokens": -5}});
        assert_eq!(est.max_output_tokens(CLAUDE, &bad), 64_000);
    }

    #[test]
    fn calibration_is_per_base_model_and_ignores_empty_observations() {
        let est = Estimator::new();
        est.observe("us.acme.a", 100, 150);
        assert_eq!(
            est.calibration("acme.a"),
            Calibration {
                ratio_ppm: 1_500_000,
                observations: 1
            }
        );
        assert_eq!(est.calibration("acme.b"), Calibration::NEUTRAL);
        est.observe("acme.b", 0, 10);
        est.observe("acme.b", 10, 0);
        assert_eq!(est.calibration("acme.b"), Calibration::NEUTRAL);
        // A wild outlier is clamped to 8x.
        est.observe("acme.c", 1, 1_000_000);
        assert_eq!(est.calibration("acme.c").ratio_ppm, MAX_RATIO_PPM);
        // The calibrated estimate scales the raw one, rounding up.
        let request = json!({"messages": [{"role": "user", "content": [{"text": "a".repeat(396)}]}]});
        let e = est.estimate("acme.a", &request);
        assert_eq!((e.raw, e.input_tokens), (103, 155));
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let est = Estimator::new();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let est = &est;
                s.spawn(move || {
                    for i in 0..500 {
                        est.observe(&format!("acme.m{}", i % 3), 100, 120 + t);
                        est.estimate("acme.m0", &json!({}));
                    }
                });
            }
        });
        let total: u64 = (0..3)
            .map(|m| est.calibration(&format!("acme.m{m}")).observations)
            .sum();
        assert_eq!(total, 8 * 500);
        let ratio = est.calibration("acme.m0").ratio_ppm;
        // Every sample was 1.20..=1.27; the average must stay inside.
        assert!((1_200_000..=1_270_000).contains(&ratio), "{ratio}");
    }

    /// A deterministic generator, so the corpus is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A model's "real" tokenizer: text at `chars_per_token_x10 / 10`
    /// characters per token, its own image and framing costs, and ±6% noise
    /// for everything a character count cannot see.
    struct TrueTokenizer {
        chars_per_token_x10: u64,
        image_tokens: u64,
        message_overhead: u64,
    }

    fn words(rng: &mut Rng, chars: u64) -> String {
        const WORDS: [&str; 12] = [
            "budget",
            "the",
            "inference",
            "of",
            "tenant",
            "token",
            "request",
            "a",
            "model",
            "cost",
            "policy",
            "and",
        ];
        let mut s = String::new();
        while (s.len() as u64) < chars {
            s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            s.push(' ');
        }
        s
    }

    /// One synthetic Converse request and its "true" token count.
    fn sample(rng: &mut Rng, tok: &TrueTokenizer) -> (Value, u64) {
        let mut truth = 0u64;
        let turns = 1 + rng.below(6);
        let mut messages = Vec::new();
        let text_tokens = |chars: u64| (chars * 10).div_ceil(tok.chars_per_token_x10);
        for turn in 0..turns {
            let chars = 40 + rng.below(6_000);
            let text = words(rng, chars);
            truth += tok.message_overhead + text_tokens(text.chars().count() as u64);
            let mut content = vec![json!({"text": text})];
            if turn == 0 && rng.below(10) == 0 {
                content.push(json!({"image": {"format": "png", "source": {"bytes": "AAAA"}}}));
                truth += tok.image_tokens;
            }
            let role = if turn % 2 == 0 { "user" } else { "assistant" };
            messages.push(json!({"role": role, "content": content}));
        }
        let chars = rng.below(2_000);
        let system = words(rng, chars);
        truth += text_tokens(system.chars().count() as u64);
        let mut request = json!({"system": [{"text": system}], "messages": messages});
        if rng.below(5) == 0 {
            let spec = json!({"name": "search", "description": words(rng, 200),
                "inputSchema": {"json": {"type": "object", "properties": {"q": {"type": "string"}}}}});
            truth += 250 + text_tokens(serde_json::to_string(&spec).expect("serialises").len() as u64);
            request["toolConfig"] = json!({"tools": [{"toolSpec": spec}]});
        }
        // ±6% for what a character count cannot see.
        let noise_ppm = 940_000 + rng.below(120_001);
        (request, (truth * noise_ppm).div_ceil(PPM))
    }

    /// Mean absolute percentage error over `corpus`, in hundredths of a percent.
    fn mape_bp(est: &Estimator, model: &str, corpus: &[(Value, u64)]) -> u64 {
        let total: u64 = corpus
            .iter()
            .map(|(request, truth)| {
                let guess = est.estimate(model, request).input_tokens;
                guess.abs_diff(*truth) * 10_000 / truth
            })
            .sum();
        total / corpus.len() as u64
    }

    fn pct(bp: u64) -> String {
        format!("{}.{:02}%", bp / 100, bp % 100)
    }

    #[test]
    fn calibration_shrinks_the_estimation_error() {
        let models = [
            // Denser than the heuristic's 4 chars/token: it underestimates.
            (
                "anthropic.claude-sonnet-4-20250514-v1:0",
                TrueTokenizer {
                    chars_per_token_x10: 32,
                    image_tokens: 1_500,
                    message_overhead: 3,
                },
            ),
            // Looser: it overestimates.
            (
                "meta.llama3-3-70b-instruct-v1:0",
                TrueTokenizer {
                    chars_per_token_x10: 48,
                    image_tokens: 1_200,
                    message_overhead: 5,
                },
            ),
        ];
        let est = Estimator::new();
        for (i, (model, tok)) in models.iter().enumerate() {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 + i as u64);
            let held_out: Vec<_> = (0..300).map(|_| sample(&mut rng, tok)).collect();
            let before = mape_bp(&est, model, &held_out);
            let mut after = Vec::new();
            for n in 1..=200u64 {
                let (request, truth) = sample(&mut rng, tok);
                let raw = est.estimate(model, &request).raw;
                est.observe(&format!("us.{model}"), raw, truth);
                if [10, 50, 200].contains(&n) {
                    after.push((n, mape_bp(&est, model, &held_out)));
                }
            }
            let ratio = est.calibration(model).ratio_ppm;
            eprintln!(
                "estimator MAPE, {model} (true {}.{} chars/token), 300 held-out requests: before {}; {}; ratio {}.{:06}",
                tok.chars_per_token_x10 / 10,
                tok.chars_per_token_x10 % 10,
                pct(before),
                after
                    .iter()
                    .map(|(n, e)| format!("after {n} observations {}", pct(*e)))
                    .collect::<Vec<_>>()
                    .join(", "),
                ratio / PPM,
                ratio % PPM,
            );
            let (_, last) = after[after.len() - 1];
            assert!(before > 1_500, "{model}: before {}", pct(before));
            assert!(last < 500, "{model}: after 200 observations {}", pct(last));
        }
    }
}

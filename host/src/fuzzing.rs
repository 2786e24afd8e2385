//! Fuzz harnesses: one function per parser of outside input. Each takes raw
//! bytes and panics only when an invariant breaks; an error for bad input is
//! the expected answer. `fuzz/` drives them with libFuzzer, and
//! `host/tests/fuzz_corpora.rs` replays the committed corpora (and mutations
//! of them) on every test run. [`seeds`] writes the starting corpora.

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::{Value, json};

use crate::config::Config;
use crate::estimate::{Estimator, input_token_ceiling};
use crate::gateway::auth::Credentials;
use crate::gateway::metadata::{self, MAX_PAIRS, TollgatePairs};
use crate::ids::{ModelId, TenantId};
use crate::pricing::{Catalog, LatencyMode, Metered, ServedAs, ServiceTier, Usage};
use crate::upstream::eventstream;

/// The fuzz targets, by the names `fuzz/` and the corpus folders use.
pub const TARGETS: [&str; 5] = [
    "converse_request",
    "event_stream",
    "sigv4",
    "request_metadata",
    "config",
];

/// Runs the named target on `data`: true when the input reached the
/// target's deepest check (seeds must; most random input does not).
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "converse_request" => converse_request(data),
        "event_stream" => event_stream(data),
        "sigv4" => sigv4(data),
        "request_metadata" => request_metadata(data),
        "config" => config(data),
        other => panic!("no fuzz target named {other}"),
    }
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::embedded);
static MODELS: LazyLock<Vec<String>> = LazyLock::new(|| CATALOG.model_ids().map(str::to_owned).collect());

/// Bytes before the body in a `converse_request` input: a model index and
/// four 16-bit fractions that shape the usage a response may report.
const CONVERSE_HEAD: usize = 9;

/// A Converse body as the gateway reads it: parsed, metadata checked,
/// estimated, its tier read and its hold priced. The money invariant: any
/// usage Bedrock may report for it (prompt within the input ceiling, output
/// within the output cap, cache tokens only with cache points, the tier
/// asked or the standard tier it may spill to) costs no more than the hold.
pub fn converse_request(data: &[u8]) -> bool {
    let Some((head, body)) = data.split_at_checked(CONVERSE_HEAD) else {
        return false;
    };
    let model = &MODELS[usize::from(head[0]) % MODELS.len()];
    let fraction = |i: usize| u64::from(u16::from_le_bytes([head[1 + 2 * i], head[2 + 2 * i]]));
    let Ok(request @ Value::Object(_)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    if let Some(pairs) = request.get("requestMetadata") {
        let _ = metadata::validate_caller(pairs);
    }
    let estimator = Estimator::new();
    let estimate = estimator.estimate(model, &request);
    let ceiling = input_token_ceiling(body.len(), &request);
    assert!(
        ceiling >= body.len() as u64,
        "the input ceiling is below the body's bytes"
    );
    let max_output = estimator.max_output_tokens(model, &request);
    let Ok(asked) = ServedAs::read(&request, ServedAs::default()) else {
        return false;
    };
    let caching = estimate.uses_prompt_cache;
    let Ok(hold) = CATALOG.hold(model, ceiling, max_output, caching, asked) else {
        return false;
    };

    let scale = |total: u64, f: u64| u64::try_from(u128::from(total) * u128::from(f) / 65_535).unwrap_or(total);
    let prompt = scale(ceiling, fraction(0));
    let output = scale(max_output, fraction(1));
    let (cache_read, cache_write) = if caching {
        let read = scale(prompt, fraction(2));
        (read, scale(prompt - read, fraction(3)))
    } else {
        (0, 0)
    };
    let usage = Usage {
        input_tokens: prompt - cache_read - cache_write,
        output_tokens: output,
        cache_read_input_tokens: cache_read,
        cache_write_input_tokens: cache_write,
        cache_write_1h_input_tokens: scale(cache_write, fraction(2)),
    };
    let spill = matches!(asked.tier, ServiceTier::Flex | ServiceTier::Reserved);
    let tiers = [Some(asked.tier), spill.then_some(ServiceTier::Standard)];
    let latencies = [asked.latency, LatencyMode::Standard];
    let mut compared = false;
    for tier in tiers.into_iter().flatten() {
        for latency in latencies {
            let metered = Metered {
                usage,
                served_as: ServedAs { tier, latency },
            };
            if let Ok(charge) = CATALOG.charge(model, &metered) {
                compared = true;
                assert!(
                    charge.cost <= hold,
                    "{model}: {usage:?} served as {:?} costs {} but the hold was {hold}",
                    metered.served_as,
                    charge.cost
                );
            }
        }
    }
    // A response carrying any figures must read or fail, never panic.
    let _ = Metered::from_response(&request, asked);
    compared
}

/// An upstream ConverseStream body. Frames split off a buffer fed a byte at
/// a time are those split off the whole buffer at once, each raw frame is
/// the bytes it was cut from, and an event re-encoded decodes to itself.
pub fn event_stream(data: &[u8]) -> bool {
    let _ = eventstream::decode_all(data);

    let mut whole = BytesMut::from(data);
    let mut at_once = Vec::new();
    let whole_error = loop {
        match eventstream::split_frame(&mut whole) {
            Ok(Some(frame)) => at_once.push(frame),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    let consumed: Vec<u8> = at_once.iter().flat_map(|(raw, _)| raw.iter().copied()).collect();
    assert_eq!(
        consumed,
        data[..consumed.len()],
        "raw frames are not the bytes they were cut from"
    );

    let mut trickle = BytesMut::new();
    let mut one_by_one = Vec::new();
    let mut trickle_error = false;
    'feed: for byte in data {
        trickle.extend_from_slice(&[*byte]);
        loop {
            match eventstream::split_frame(&mut trickle) {
                Ok(Some(frame)) => one_by_one.push(frame),
                Ok(None) => break,
                Err(_) => {
                    trickle_error = true;
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(at_once, one_by_one, "framing depends on how the bytes arrived");
    assert_eq!(whole_error, trickle_error, "an error depends on how the bytes arrived");

    for (_, frame) in &at_once {
        if frame.message_type != "event" || frame.payload.is_null() {
            continue;
        }
        if let Ok(encoded) = eventstream::encode_event(&frame.kind, &frame.payload) {
            let again = eventstream::decode_all(&encoded).expect("an encoded event decodes");
            assert_eq!(again.len(), 1);
            assert_eq!((&again[0].kind, &again[0].payload), (&frame.kind, &frame.payload));
        }
    }
    !at_once.is_empty()
}

const SIGV4_TENANT: &str = "acme";
const SIGV4_KEY_ID: &str = "AKIDFUZZEXAMPLE";
const SIGV4_SECRET: &str = "fuzz/secret+EXAMPLEKEY0123456789abcdef";
const BEARER_KEY: &str = "acme-fuzz-bearer-key-0123456789";
/// The gateway's clock in the `sigv4` target: 2026-01-01T00:00:00Z.
const SIGV4_NOW_SECS: u64 = 1_767_225_600;

static CREDENTIALS: LazyLock<Credentials> = LazyLock::new(|| {
    let tenant = TenantId::new(SIGV4_TENANT).expect("a valid tenant id");
    let mut creds = Credentials::new();
    creds
        .add_access_key(&tenant, SIGV4_KEY_ID, SIGV4_SECRET)
        .expect("a valid access key");
    creds.add_bearer_key(&tenant, BEARER_KEY).expect("a strong bearer key");
    creds
});

/// A request as text: `METHOD URI`, then `name: value` lines, a blank line
/// and the body. Whatever precheck refuses, authenticate refuses too;
/// whatever authenticates is the one tenant, and stops authenticating when
/// one byte of its body changes.
pub fn sigv4(data: &[u8]) -> bool {
    let Some((method, uri, headers, body)) = parse_request(data) else {
        return false;
    };
    let now = UNIX_EPOCH + Duration::from_secs(SIGV4_NOW_SECS);
    let creds = &*CREDENTIALS;
    let pre = creds.precheck_at(&headers, &uri, now);
    let Ok(tenant) = creds.authenticate_at(&headers, &method, &uri, body, now) else {
        return false;
    };
    assert!(pre.is_ok(), "precheck refused a request that authenticates: {pre:?}");
    assert_eq!(tenant.as_str(), SIGV4_TENANT);
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("bearer ")));
    if !bearer && let Some(last) = body.len().checked_sub(1) {
        let mut tampered = body.to_vec();
        tampered[last] ^= 1;
        assert!(
            creds.authenticate_at(&headers, &method, &uri, &tampered, now).is_err(),
            "a signed request still authenticates with a changed body"
        );
    }
    true
}

fn parse_request(data: &[u8]) -> Option<(Method, Uri, HeaderMap, &[u8])> {
    let split = data.windows(2).position(|w| w == b"\n\n")?;
    let (head, body) = (&data[..split], &data[split + 2..]);
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, uri) = lines.next()?.split_once(' ')?;
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let uri: Uri = uri.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
            HeaderValue::from_str(value.trim()).ok()?,
        );
    }
    Some((method, uri, headers, body))
}

/// A caller's `requestMetadata` merged with tollgate's pairs. Merging keeps
/// Bedrock's limits whatever the caller sent: at most 16 pairs, tollgate's
/// first and unchanged, no caller key in tollgate's namespace, every pair
/// valid, no key twice, and every caller pair either kept or reported.
pub fn request_metadata(data: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return false;
    };
    let caller = match metadata::validate_caller(&value) {
        Ok(pairs) => pairs,
        // What a caller sent that the gateway refuses still merges safely.
        Err(_) => match &value {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            _ => return false,
        },
    };
    let tenant = TenantId::new("acme").expect("a valid tenant id");
    let original = ModelId::new("anthropic.claude-sonnet-4-20250514-v1:0");
    let verdict = vec![
        ("team".to_owned(), "search".to_owned()),
        ("tier".to_owned(), "gold".to_owned()),
    ];
    let ours = TollgatePairs {
        tenant: &tenant,
        decision: "downgrade",
        policy_version: Some("3"),
        policy_failure: None,
        original_model: Some(&original),
        user: caller.first().map(|(_, v)| v.as_str()),
        use_case: caller.last().map(|(k, _)| k.as_str()),
        verdict: &verdict,
    };
    let merged = metadata::merge(&caller, &ours);
    assert!(merged.pairs.len() <= MAX_PAIRS, "{} pairs", merged.pairs.len());
    let own = ours.pairs();
    for ((key, value), (own_key, own_value)) in merged.pairs.iter().zip(&own) {
        assert_eq!(
            (key.as_str(), value),
            (*own_key, own_value),
            "tollgate's pairs come first"
        );
    }
    let mut keys: Vec<&str> = merged.pairs.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), merged.pairs.len(), "a key is sent twice");
    let forwarded = Value::Object(merged.pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
    let forwarded = metadata::validate_caller(&forwarded);
    assert!(
        forwarded.is_ok(),
        "the merge forwards a pair Bedrock refuses: {forwarded:?}"
    );
    for (key, _) in merged.pairs.iter().skip(own.len()) {
        let from_verdict = verdict.iter().any(|(k, _)| k == key);
        assert!(
            from_verdict || !metadata::is_reserved(key),
            "caller key {key} is in tollgate's namespace"
        );
    }
    for (key, _) in &caller {
        let kept = merged.pairs.iter().skip(own.len()).any(|(k, _)| k == key);
        let reported = merged.dropped.iter().any(|d| &d.key == key);
        assert!(kept || reported, "caller key {key} was neither forwarded nor reported");
    }
    true
}

/// A `tollgate.toml`: parsed, checked, and its error rendered, with any
/// environment override applied. Nothing here may panic.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let parsed = match Config::parse(text, "fuzz.toml") {
        Ok(mut config) => {
            let _ = config.apply_env(|name| (name == "TOLLGATE_LISTEN").then(|| "127.0.0.1:0".to_owned()));
            if let Err(e) = config.validate() {
                let _ = e.to_string();
            }
            for tenant in config.tenants.values() {
                let _ = tenant.limits();
                let _ = tenant.policy_file();
            }
            true
        }
        Err(e) => {
            let _ = e.to_string();
            false
        }
    };
    let _ = Catalog::empty().with_overrides_str(text, "fuzz-pricing.toml");
    parsed
}

/// Starting inputs for `target`, each a realistic instance of its format.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "converse_request" => converse_seeds(),
        "event_stream" => event_stream_seeds(),
        "sigv4" => sigv4_seeds(),
        "request_metadata" => [
            json!({"user": "u-42", "use-case": "search", "team": "core"}),
            json!({"tollgate-tenant": "evil", "TOLLGATE-decision": "allow", "a": "b"}),
            json!(
                (0..20)
                    .map(|i| (format!("k{i:02}"), json!("v")))
                    .collect::<serde_json::Map<_, _>>()
            ),
            json!({"user": "line\nbreak", "x": 7}),
        ]
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect(),
        "config" => CONFIG_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(),
        other => panic!("no fuzz target named {other}"),
    }
}

fn converse_seeds() -> Vec<Vec<u8>> {
    let bodies = [
        json!({"messages": [{"role": "user", "content": [{"text": "Hello there"}]}],
               "inferenceConfig": {"maxTokens": 256}}),
        json!({"system": [{"text": "Be brief."}, {"cachePoint": {"type": "default"}}],
               "messages": [{"role": "user", "content": [{"text": "Summarise this."},
                   {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]}],
               "serviceTier": {"type": "priority"}, "performanceConfig": {"latency": "optimized"},
               "requestMetadata": {"user": "u-1", "use-case": "chat"}}),
        json!({"messages": [{"role": "user", "content": [{"document": {"format": "pdf", "name": "a",
                   "source": {"s3Location": {"uri": "s3://bucket/a.pdf"}}}}]}],
               "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {}}}}]},
               "serviceTier": {"type": "flex"}}),
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut seed = vec![i as u8 * 7, 0xff, 0xff, 0x00, 0x80, 0x00, 0x40, 0xff, 0x7f];
            seed.extend_from_slice(body.to_string().as_bytes());
            seed
        })
        .collect()
}

fn event_stream_seeds() -> Vec<Vec<u8>> {
    let events = [
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ),
        ("messageStop", json!({"stopReason": "end_turn"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}, "metrics": {"latencyMs": 9}}),
        ),
    ];
    let frames: Vec<Vec<u8>> = events
        .iter()
        .map(|(kind, payload)| eventstream::encode_event(kind, payload).expect("encodes").to_vec())
        .collect();
    let exception = eventstream::encode_exception("throttlingException", "slow down")
        .expect("encodes")
        .to_vec();
    vec![
        frames.concat(),
        frames[3].clone(),
        [frames[0].clone(), exception].concat(),
    ]
}

/// Requests signed by the real AWS signer at the target's clock, and one bearer.
fn sigv4_seeds() -> Vec<Vec<u8>> {
    use aws_credential_types::Credentials as AwsCredentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;

    let at = UNIX_EPOCH + Duration::from_secs(SIGV4_NOW_SECS);
    let signed = |path: &str, body: &[u8], extra: &[(&str, &str)]| -> Vec<u8> {
        let uri = format!("https://bedrock-runtime.us-east-1.amazonaws.com{path}");
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), "bedrock-runtime.us-east-1.amazonaws.com".into()),
            ("content-type".into(), "application/json".into()),
        ];
        headers.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let identity: Identity = AwsCredentials::new(SIGV4_KEY_ID, SIGV4_SECRET, None, None, "fuzz").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("bedrock")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .expect("signing parameters")
            .into();
        let signable = SignableRequest::new(
            "POST",
            &uri,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .expect("a signable request");
        let (instructions, _) = sign(signable, &params).expect("signs").into_parts();
        let (signed_headers, _) = instructions.into_parts();
        let mut text = format!("POST {uri}\n");
        for (k, v) in &headers {
            text.push_str(&format!("{k}: {v}\n"));
        }
        for header in signed_headers {
            text.push_str(&format!("{}: {}\n", header.name(), header.value()));
        }
        text.push('\n');
        let mut seed = text.into_bytes();
        seed.extend_from_slice(body);
        seed
    };
    let body = br#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#;
    let path = "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse";
    vec![
        signed(path, body, &[]),
        signed(
            "/model/amazon.nova-micro-v1%3A0/converse-stream?x=1&a=%2F",
            body,
            &[("x-amz-user-agent", "sdk")],
        ),
        format!("POST http://127.0.0.1{path}\nauthorization: Bearer {BEARER_KEY}\n\n{{}}").into_bytes(),
    ]
}

const CONFIG_SEEDS: [&str; 3] = [
    r#"[server]
listen = "127.0.0.1:8443"
admin-listen = "127.0.0.1:8444"
admin-token = "admin-token-0123456789abcdef"
max-connections = 1000
header-read-timeout-ms = 5000

[upstream]
kind = "mock"
[upstream.mock]
latency-ms = 15

[ledger]
path = "ledger.redb"

[log]
invocations = "invocations.jsonl"
max-bytes = 1000000
rotate-every = "hour"

[engine]
decision-threads = 2
tenant-concurrency = 1
breaker-failures = 10

[tenants.acme]
tier = "pro"
budget-usd = "50"
period = "monthly"
time-zone = "America/New_York"
policy = "policies/budget_guard.wasm"
failure-mode = "closed"
rpm = 600
[[tenants.acme.api-keys]]
key = "acme-key-0123456789abcdef"
[[tenants.acme.access-keys]]
access-key-id = "AKIDACME"
secret-access-key = "secret"
[tenants.acme.policy-config]
downgrade-to = "amazon.nova-micro-v1:0"
"#,
    r#"[tenants.globex]
budget-usd = "0.25"
policy = "p.wasm"
deadline-ms = 5
"#,
    r#"[models."anthropic.claude-3-haiku-20240307-v1:0"]
input = "0.25"
output = "1.25"
"#,
];

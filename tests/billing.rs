//! Bill-exact pricing end to end: the real `tollgate serve`, the real AWS
//! SDK, and the mock reporting what Bedrock meters (cache writes by TTL, the
//! service tier, the prompt size). Every expected figure is computed here by
//! hand from the published unit prices and AWS's formula:
//! `ceil(sum(tokens × price per million) / 1,000,000)` nano-dollars.

mod support;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, CacheTtl, ContentBlock, ConversationRole, ConverseStreamOutput,
    InferenceConfiguration, Message, ServiceTier, ServiceTierType, SystemContentBlock, TokenUsage,
};
use support::gateway::{Options, TenantSpec, TestGateway};
use tollgate_host::gateway::invocation_log::InvocationRecord;

const SONNET_45: &str = "anthropic.claude-sonnet-4-5-20250929-v1:0";
const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";
const GPT_OSS: &str = "openai.gpt-oss-120b-1:0";

/// Per-million prices in nano-dollars, in Bedrock's usage order.
#[derive(Clone, Copy)]
struct Unit {
    input: u128,
    output: u128,
    cache_read: u128,
    write_5m: u128,
    write_1h: u128,
}

const fn usd(micro: u128) -> u128 {
    // Prices below are written in micro-dollars per million tokens.
    micro * 1_000
}

fn expected(u: Unit, usage: &TokenUsage) -> u64 {
    let n = |v: i32| u128::try_from(v).expect("non-negative");
    let write_1h: u128 = usage
        .cache_details()
        .iter()
        .filter(|d| d.ttl() == &CacheTtl::OneHour)
        .map(|d| n(d.input_tokens()))
        .sum();
    let writes = n(usage.cache_write_input_tokens().unwrap_or(0));
    let sum = n(usage.input_tokens()) * u.input
        + n(usage.output_tokens()) * u.output
        + n(usage.cache_read_input_tokens().unwrap_or(0)) * u.cache_read
        + (writes - write_1h) * u.write_5m
        + write_1h * u.write_1h;
    u64::try_from(sum.div_ceil(1_000_000)).expect("fits")
}

fn tenant() -> TenantSpec {
    TenantSpec {
        budget_usd: "1000",
        ..TenantSpec::new("acme", "allow-all")
    }
}

fn user(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .expect("message")
}

fn max_tokens(n: i32) -> InferenceConfiguration {
    InferenceConfiguration::builder().max_tokens(n).build()
}

fn tier(t: ServiceTierType) -> ServiceTier {
    ServiceTier::builder().r#type(t).build().expect("tier")
}

/// The one record of `request_id` (the SDK's view of the call) and its cost.
fn record_of(records: &[InvocationRecord], request_id: &str) -> InvocationRecord {
    records
        .iter()
        .find(|r| r.request_id == request_id)
        .unwrap_or_else(|| panic!("no record of {request_id}: {records:#?}"))
        .clone()
}

async fn start(region: &'static str) -> (TestGateway, Client) {
    let gw = TestGateway::start(Options {
        tenants: vec![tenant()],
        region,
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&tenant());
    (gw, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_read_and_a_1h_write_on_a_us_profile_are_exact() {
    let (gw, client) = start("").await;
    let model = format!("us.{SONNET_45}");
    // us. Sonnet 4.5: $3.30 in, $16.50 out, $0.33 read, $4.125 5m write, $6.60 1h write.
    let unit = Unit {
        input: usd(3_300_000),
        output: usd(16_500_000),
        cache_read: usd(330_000),
        write_5m: usd(4_125_000),
        write_1h: usd(6_600_000),
    };
    let system = "You are a careful analyst of quarterly reports. ".repeat(200);
    let ask = || {
        client
            .converse()
            .model_id(&model)
            .system(SystemContentBlock::Text(system.clone()))
            .system(SystemContentBlock::CachePoint(
                CachePointBlock::builder()
                    .r#type(CachePointType::Default)
                    .ttl(CacheTtl::OneHour)
                    .build()
                    .expect("cache point"),
            ))
            .messages(user("Summarise the quarter"))
            .inference_config(max_tokens(300))
            .send()
    };
    let first = ask().await.expect("first call writes the cache");
    let second = ask().await.expect("second call reads it");
    let (u1, u2) = (first.usage().expect("usage"), second.usage().expect("usage"));
    assert!(
        u1.cache_details()
            .iter()
            .any(|d| d.ttl() == &CacheTtl::OneHour && d.input_tokens() > 0)
    );
    assert!(u2.cache_read_input_tokens().unwrap_or(0) > 0);

    let state = gw.settled("acme").await;
    let records = gw.wait_for_records(2).await;
    let mut total = 0;
    for (out, usage) in [(&first, u1), (&second, u2)] {
        let id = out.request_id().expect("request id");
        let record = record_of(&records, id);
        assert_eq!(record.tollgate.charged_from, "usage");
        assert_eq!(record.tollgate.cost_nano_usd, expected(unit, usage), "{record:#?}");
        let billing = record.tollgate.billing.as_ref().expect("billing");
        assert_eq!(billing.unit_prices.cache_write_1h.get(), 6_600_000_000);
        assert_eq!(
            (billing.region.as_str(), billing.prefix.as_deref()),
            ("us-east-1", Some("us"))
        );
        total += record.tollgate.cost_nano_usd;
    }
    // The first call's 1h writes at the 1h price, not the 5-minute one.
    let billed = records[0]
        .tollgate
        .billing
        .as_ref()
        .and_then(|b| b.usage)
        .expect("usage");
    assert!(billed.cache_write_1h > 0 && billed.cache_write_5m == 0, "{billed:?}");
    assert_eq!(state["spent-nano-usd"], total);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_above_200k_tokens_is_billed_whole_at_the_long_context_price() {
    let (gw, client) = start("").await;
    // ~260,000 tokens of prompt (the mock counts 4 characters a token).
    let long = "word ".repeat(208_000);
    let out = client
        .converse()
        .model_id(SONNET_45)
        .messages(user(&long))
        .inference_config(max_tokens(200))
        .send()
        .await
        .expect("a long prompt is served");
    let usage = out.usage().expect("usage");
    assert!(usage.input_tokens() > 200_000, "{usage:?}");
    // Above 200K, global Sonnet 4.5: $6 in, $22.50 out, for every token.
    let unit = Unit {
        input: usd(6_000_000),
        output: usd(22_500_000),
        cache_read: usd(600_000),
        write_5m: usd(7_500_000),
        write_1h: usd(12_000_000),
    };
    let state = gw.settled("acme").await;
    let record = record_of(&gw.wait_for_records(1).await, out.request_id().expect("id"));
    assert_eq!(record.tollgate.cost_nano_usd, expected(unit, usage));
    assert!(record.tollgate.billing.as_ref().expect("billing").long_context);
    assert!(
        record.tollgate.cost_nano_usd <= record.tollgate.reserved_nano_usd,
        "the hold covered it"
    );
    assert_eq!(state["spent-nano-usd"], record.tollgate.cost_nano_usd);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_and_flex_calls_are_billed_at_their_tier_streams_included() {
    let (gw, client) = start("").await;
    let standard = Unit {
        input: usd(150_000),
        output: usd(600_000),
        cache_read: usd(150_000),
        write_5m: usd(150_000),
        write_1h: usd(150_000),
    };
    let times = |u: Unit, num: u128, den: u128| Unit {
        input: u.input * num / den,
        output: u.output * num / den,
        cache_read: u.cache_read * num / den,
        write_5m: u.write_5m * num / den,
        write_1h: u.write_1h * num / den,
    };
    let prompt = "Classify this support ticket by urgency and product area. ".repeat(30);
    let mut expected_total = 0;
    let mut ids = Vec::new();
    for (t, unit) in [
        (ServiceTierType::Priority, times(standard, 7, 4)),
        (ServiceTierType::Flex, times(standard, 1, 2)),
    ] {
        let out = client
            .converse()
            .model_id(GPT_OSS)
            .messages(user(&prompt))
            .service_tier(tier(t.clone()))
            .inference_config(max_tokens(400))
            .send()
            .await
            .expect("served");
        assert_eq!(out.service_tier().map(|s| s.r#type().clone()), Some(t));
        let cost = expected(unit, out.usage().expect("usage"));
        expected_total += cost;
        ids.push((out.request_id().expect("id").to_owned(), cost));
    }
    // A priority stream: its final metadata event says the tier.
    let mut stream = client
        .converse_stream()
        .model_id(GPT_OSS)
        .messages(user(&prompt))
        .service_tier(tier(ServiceTierType::Priority))
        .inference_config(max_tokens(400))
        .send()
        .await
        .expect("stream");
    let stream_id = stream.request_id().expect("id").to_owned();
    let mut usage = None;
    while let Some(event) = stream.stream.recv().await.expect("event") {
        if let ConverseStreamOutput::Metadata(m) = event {
            usage = m.usage().cloned();
        }
    }
    let cost = expected(times(standard, 7, 4), &usage.expect("usage"));
    expected_total += cost;
    ids.push((stream_id, cost));

    let state = gw.settled("acme").await;
    let records = gw.wait_for_records(3).await;
    for (id, cost) in &ids {
        assert_eq!(record_of(&records, id).tollgate.cost_nano_usd, *cost, "{id}");
    }
    let tiers: Vec<String> = records
        .iter()
        .map(|r| format!("{:?}", r.tollgate.billing.as_ref().expect("billing").service_tier))
        .collect();
    assert_eq!(tiers, ["Priority", "Flex", "Priority"]);
    assert_eq!(state["spent-nano-usd"], expected_total);
    gw.reconcile().await;
}

/// One Converse call of `model` through a gateway whose upstream is in
/// `region`, charged exactly at `unit`.
async fn one_call_is_billed_at(region: &'static str, model: &str, unit: Unit) {
    let (gw, client) = start(region).await;
    let out = client
        .converse()
        .model_id(model)
        .messages(user(&"Draft a short memo on the delivery schedule. ".repeat(20)))
        .inference_config(max_tokens(300))
        .send()
        .await
        .expect("served");
    let state = gw.settled("acme").await;
    let record = record_of(&gw.wait_for_records(1).await, out.request_id().expect("id"));
    assert_eq!(
        record.tollgate.cost_nano_usd,
        expected(unit, out.usage().expect("usage"))
    );
    assert_eq!(record.tollgate.billing.as_ref().expect("billing").region, region);
    assert_eq!(state["spent-nano-usd"], record.tollgate.cost_nano_usd);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eu_nova_call_is_billed_at_frankfurt_prices() {
    // Nova Micro from eu-central-1: $0.046 in, $0.184 out (us-east-1: $0.035 / $0.14).
    let unit = Unit {
        input: usd(46_000),
        output: usd(184_000),
        cache_read: usd(11_500),
        write_5m: usd(46_000),
        write_1h: usd(46_000),
    };
    one_call_is_billed_at("eu-central-1", &format!("eu.{NOVA_MICRO}"), unit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_govcloud_sonnet_call_is_billed_at_govcloud_prices() {
    // Sonnet 4.5 in GovCloud: $3.60 in, $18 out, and no further us-gov. premium.
    let unit = Unit {
        input: usd(3_600_000),
        output: usd(18_000_000),
        cache_read: usd(360_000),
        write_5m: usd(4_500_000),
        write_1h: usd(7_200_000),
    };
    one_call_is_billed_at("us-gov-west-1", &format!("us-gov.{SONNET_45}"), unit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_without_prices_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nplain-http = true\n\n[upstream]\nkind = \"bedrock\"\n\
             [upstream.bedrock]\nendpoint = \"http://127.0.0.1:9\"\nregion = \"mars-north-1\"\nauth = \"none\"\n\n\
             [ledger]\nstore = \"memory\"\n\n[tenants.acme]\nbudget-usd = \"1\"\npolicy = {:?}\n\
             [[tenants.acme.api-keys]]\nkey = \"acme-bearer-key-0123456789\"\n",
            support::component("allow-all").display().to_string()
        ),
    )
    .expect("write config");
    let out = support::tollgate()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run tollgate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no prices for region \"mars-north-1\"") && stderr.contains("[regions."),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_catches_a_charge_that_does_not_recompute() {
    let (gw, client) = start("").await;
    client
        .converse()
        .model_id(NOVA_MICRO)
        .messages(user("Name three rivers in Europe."))
        .inference_config(max_tokens(100))
        .send()
        .await
        .expect("served");
    gw.reconcile().await;

    // `tollgate cost --log` reprices the record on its own.
    let log = gw.log_path();
    let run = |args: &[&str]| {
        let out = support::tollgate().args(args).output().expect("run tollgate");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let log_arg = log.display().to_string();
    let (ok, report) = run(&["cost", "--log", &log_arg]);
    assert!(ok && report.contains("(matches)"), "{report}");

    // One nano-dollar more in the log than the formula gives: both the record
    // and the tenant's total are reported, and the command fails.
    let text = std::fs::read_to_string(&log).expect("log");
    let record: serde_json::Value = serde_json::from_str(text.lines().next().expect("a record")).expect("json");
    let cost = record["tollgate"]["costNanoUsd"].as_u64().expect("cost");
    let tampered = text.replacen(
        &format!("\"costNanoUsd\":{cost}"),
        &format!("\"costNanoUsd\":{}", cost + 1),
        1,
    );
    assert_ne!(tampered, text);
    std::fs::write(&log, tampered).expect("rewrite log");
    let config = gw.dir().join("tollgate.toml").display().to_string();
    let (ok, report) = run(&["reconcile", "--config", &config, "--admin-url", &gw.admin_url]);
    assert!(!ok, "{report}");
    assert!(report.contains("MISMATCH") && report.contains("not exact"), "{report}");
    let (_, report) = run(&["cost", "--log", &log_arg]);
    assert!(report.contains("MISMATCH"), "{report}");
}

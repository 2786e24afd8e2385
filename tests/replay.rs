//! `tollgate replay` over a log the real gateway wrote: the real AWS SDK
//! spends a tenant well into its budget through budget-guard, then the
//! built binary replays that log with the same policy (nothing may change,
//! to the nano-dollar), with a stricter configuration of it (the calls
//! past its threshold change, and only those) and with one that downgrades
//! every call (charged the recorded usage at the cheaper model's prices).
//! Every expectation is computed from the log itself.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ConversationRole, InferenceConfiguration, Message, ServiceTier,
    ServiceTierType, SystemContentBlock,
};
use serde_json::Value;
use support::gateway::{Options, TenantSpec, TestGateway, call_model};
use tollgate_host::Catalog;
use tollgate_host::gateway::invocation_log::InvocationRecord;
use tollgate_host::pricing::{Metered, ServedAs};

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";
const GPT_OSS: &str = "openai.gpt-oss-120b-1:0";
/// The tenant's budget, in dollars and nano-dollars.
const BUDGET_USD: &str = "0.0025";
const BUDGET_NANO: u64 = 2_500_000;
const CALLS: usize = 45;

/// Leading indicators off (alerts from spend alone), so which call crosses
/// which line depends on the money only, not on how fast the test machine is.
const SPEND_ONLY_ALERTS: &str =
    "\n[alerts.thresholds.forecast-percent]\n[alerts.thresholds.burn-percent-of-baseline]\n";

/// A gateway whose tenant `acme` made `CALLS` Converse calls to Haiku
/// through budget-guard, one after the other, and its log.
async fn recorded(extra_toml: &'static str) -> (TestGateway, Vec<InvocationRecord>) {
    let acme = TenantSpec {
        budget_usd: BUDGET_USD,
        ..TenantSpec::new("acme", "budget-guard")
    };
    let gateway = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        extra_toml,
        ..Options::default()
    })
    .await;
    let client = gateway.sigv4_client(&acme);
    for _ in 0..CALLS {
        // Refusals are part of the record too.
        let _ = call_model(&client, HAIKU).await;
    }
    let records = gateway.wait_for_records(CALLS).await;
    assert_eq!(records.len(), CALLS);
    (gateway, records)
}

fn replay(gateway: &TestGateway, config: &Path, extra: &[&str]) -> Output {
    support::tollgate()
        .arg("replay")
        .arg("--policy")
        .arg(support::component("budget-guard"))
        .arg("--log")
        .arg(gateway.log_path())
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .expect("run tollgate replay")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "tollgate replay failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", String::from_utf8_lossy(&output.stdout)))
}

fn count(records: &[InvocationRecord], decision: &str) -> u64 {
    records.iter().filter(|r| r.tollgate.decision == decision).count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_policy_changes_nothing_and_a_stricter_one_changes_the_calls_past_its_line() {
    let (gateway, records) = recorded(SPEND_ONLY_ALERTS).await;
    let config = gateway.dir().join("tollgate.toml");
    let live_spend: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    // The run went well into the budget, and budget-guard downgraded there.
    assert!(
        live_spend * 100 >= BUDGET_NANO * 60,
        "spent only {live_spend} of {BUDGET_NANO}"
    );
    assert!(count(&records, "downgrade") > 0, "{records:#?}");

    // (a) The same policy, the tenant's own parameters: the same decisions, to the nano-dollar.
    let same = json_of(&replay(&gateway, &config, &["--format", "json"]));
    let acme = &same["tenants"]["acme"];
    assert_eq!(same["records"], CALLS as u64);
    assert_eq!(acme["calls"], CALLS as u64);
    assert_eq!(acme["changed_calls"], 0, "{same:#}");
    assert_eq!(acme["recorded_spend_nano_usd"], live_spend);
    assert_eq!(acme["candidate_spend_nano_usd"], live_spend);
    assert_eq!(acme["saved_nano_usd"], 0);
    for verdict in ["admit", "downgrade", "throttle", "reject"] {
        assert_eq!(acme["recorded"][verdict], count(&records, verdict), "{verdict}");
        assert_eq!(acme["candidate"][verdict], count(&records, verdict), "{verdict}");
    }
    assert_eq!(same["differences"], Value::Array(Vec::new()));

    // (b) Stricter: reject from 40% of the budget committed, and no downgrade
    // chain. Until its first refusal it sees exactly the live state, so it
    // admits while the live spend before the call is under 40% and refuses
    // every call from there (its spend no longer moves).
    let stricter = r#"{"reject-at-percent": 40, "downgrade-at-percent": 40, "downgrade-chain": []}"#;
    let cut = {
        let mut spent = 0u64;
        records
            .iter()
            .position(|r| {
                let over = spent * 100 >= BUDGET_NANO * 40;
                spent += r.tollgate.cost_nano_usd;
                over
            })
            .expect("the live run passed 40% of the budget")
    };
    // Under 40% the live run admitted on Haiku, so those charges carry over as they were.
    assert!(records[..cut].iter().all(|r| r.tollgate.decision == "admit"));
    let kept: u64 = records[..cut].iter().map(|r| r.tollgate.cost_nano_usd).sum();
    let changed = (CALLS - cut) as u64;

    let out = json_of(&replay(
        &gateway,
        &config,
        &["--format", "json", "--policy-config", stricter, "--show", "3"],
    ));
    let acme = &out["tenants"]["acme"];
    assert_eq!(acme["candidate"]["admit"], cut as u64, "{out:#}");
    assert_eq!(acme["candidate"]["reject"], changed);
    assert_eq!(acme["candidate"]["downgrade"], 0);
    assert_eq!(acme["changed_calls"], changed);
    assert_eq!(acme["candidate_spend_nano_usd"], kept);
    assert_eq!(acme["saved_nano_usd"], live_spend - kept);
    assert!(kept < live_spend);
    let differences = out["differences"].as_array().expect("differences");
    assert_eq!(differences.len(), 3.min(changed as usize));
    for (d, r) in differences.iter().zip(&records[cut..]) {
        assert_eq!(d["request_id"], r.tollgate.request_id.as_str());
        assert_eq!(d["recorded"]["verdict"], r.tollgate.decision.as_str());
        assert_eq!(d["recorded"]["cost_nano_usd"], r.tollgate.cost_nano_usd);
        assert_eq!(d["candidate"]["verdict"], "reject");
        assert_eq!(d["candidate"]["cost_nano_usd"], 0);
        assert!(d["reason"].as_str().unwrap_or("").contains("budget exhausted"), "{d}");
    }

    // (c) Downgrade everything to Nova Micro from the first call: every
    // call served on Haiku live changes, and is charged its recorded usage
    // at Nova Micro's prices; calls Nova Micro served live keep their cost.
    let catalog = Catalog::embedded().in_region("us-east-1").expect("region");
    let mut expected_spend = 0;
    let mut expected_changed = 0;
    for r in &records {
        let t = &r.tollgate;
        if t.served_model_id.as_deref() == Some(NOVA_MICRO) {
            expected_spend += t.cost_nano_usd;
            continue;
        }
        expected_changed += 1;
        let billing = t.billing.as_ref().expect("a charge from usage");
        let metered = Metered {
            usage: billing.usage.expect("usage").into(),
            served_as: ServedAs {
                tier: billing.service_tier,
                latency: billing.latency,
            },
        };
        expected_spend += catalog.charge(NOVA_MICRO, &metered).expect("priced").cost.get();
    }
    let out = json_of(&replay(
        &gateway,
        &config,
        &["--format", "json", "--policy-config", r#"{"downgrade-at-percent": 0}"#],
    ));
    let acme = &out["tenants"]["acme"];
    assert_eq!(acme["candidate"]["downgrade"], CALLS as u64, "{out:#}");
    assert_eq!(acme["changed_calls"], expected_changed);
    assert_eq!(acme["candidate_spend_nano_usd"], expected_spend);
    assert_eq!(acme["estimated_spend_nano_usd"], 0);
    assert_eq!(out["differences"][0]["candidate"]["model"], NOVA_MICRO);

    // The terminal summary says the same.
    let text = replay(&gateway, &config, &["--policy-config", stricter, "--show", "1"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    eprintln!("{text}");
    assert!(
        text.contains(&format!("first 1 of {changed} changed call(s)")),
        "{text}"
    );
    assert!(text.contains(records[cut].tollgate.request_id.as_str()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrades_the_alerts_caused_live_are_caused_again() {
    // The default alerts: spending this fast forecasts far past the budget,
    // so the alert level, not the spend, makes budget-guard downgrade early.
    let (gateway, records) = recorded("").await;
    let live_spend: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    let first_downgrade = records
        .iter()
        .position(|r| r.tollgate.decision == "downgrade")
        .expect("budget-guard downgraded");
    let spent_before: u64 = records[..first_downgrade]
        .iter()
        .map(|r| r.tollgate.cost_nano_usd)
        .sum();
    assert!(
        spent_before * 100 < BUDGET_NANO * 50,
        "the first downgrade came from the spend ({spent_before}), not the alert level"
    );
    let out = json_of(&replay(
        &gateway,
        &gateway.dir().join("tollgate.toml"),
        &["--format", "json"],
    ));
    let acme = &out["tenants"]["acme"];
    assert_eq!(acme["changed_calls"], 0, "{out:#}");
    assert_eq!(acme["candidate"]["downgrade"], count(&records, "downgrade"));
    assert_eq!(acme["candidate_spend_nano_usd"], live_spend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_missing_from_the_config_are_counted_and_bad_inputs_say_what_to_do() {
    let (gateway, records) = recorded(SPEND_ONLY_ALERTS).await;
    let text = std::fs::read_to_string(gateway.dir().join("tollgate.toml")).expect("config");
    let renamed = gateway.dir().join("renamed.toml");
    std::fs::write(&renamed, text.replace("[tenants.acme", "[tenants.other")).expect("write");

    let output = replay(&gateway, &renamed, &["--format", "json"]);
    let out = json_of(&output);
    assert_eq!(out["skipped"]["unknown_tenants"]["acme"], records.len() as u64);
    assert_eq!(out["total"]["calls"], 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr
            .matches("tenant acme is in the log but not in the configuration")
            .count(),
        1,
        "{stderr}"
    );

    let config = gateway.dir().join("tollgate.toml");
    let missing: PathBuf = gateway.dir().join("no-such.jsonl");
    let output = support::tollgate()
        .args(["replay", "--policy"])
        .arg(support::component("budget-guard"))
        .arg("--log")
        .arg(&missing)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");

    let not_wasm = gateway.dir().join("not-a-policy.wasm");
    std::fs::write(&not_wasm, b"hello").expect("write");
    let output = support::tollgate()
        .args(["replay", "--policy"])
        .arg(&not_wasm)
        .arg("--log")
        .arg(gateway.log_path())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tollgate policy check"), "{stderr}");

    let output = replay(&gateway, &config, &["--policy-config", r#"{"reject-at-percent": 0}"#]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("reject-at-percent"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_live_is_held_as_the_gateway_held_it_with_its_cache_points_and_tier() {
    // A budget below any Haiku call's hold: every call is refused live.
    let acme = TenantSpec {
        budget_usd: "0.00001",
        ..TenantSpec::new("acme", "budget-guard")
    };
    let gateway = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        extra_toml: SPEND_ONLY_ALERTS,
        ..Options::default()
    })
    .await;
    let client = gateway.sigv4_client(&acme);
    let system = "You answer questions about the quarterly report. ".repeat(40);
    // (model, a cache point, the tier asked for)
    let calls = [
        (HAIKU, true, ServiceTierType::Default),
        (HAIKU, false, ServiceTierType::Default),
        (GPT_OSS, false, ServiceTierType::Priority),
    ];
    for (model, cached, tier) in &calls {
        let mut ask = client
            .converse()
            .model_id(*model)
            .system(SystemContentBlock::Text(system.clone()))
            .service_tier(ServiceTier::builder().r#type(tier.clone()).build().expect("tier"));
        if *cached {
            ask = ask.system(SystemContentBlock::CachePoint(
                CachePointBlock::builder()
                    .r#type(CachePointType::Default)
                    .build()
                    .expect("cache point"),
            ));
        }
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text("Summarise it".into()))
            .build()
            .expect("message");
        let refused = ask
            .messages(message)
            .inference_config(InferenceConfiguration::builder().max_tokens(200).build())
            .send()
            .await;
        assert!(refused.is_err(), "the budget admits no call");
    }
    let records = gateway.wait_for_records(calls.len()).await;
    assert!(records.iter().all(|r| r.tollgate.decision == "reject"), "{records:#?}");
    assert_eq!(records[0].tollgate.cache_points.len(), 1, "{:#?}", records[0]);
    assert!(records[1].tollgate.cache_points.is_empty());
    assert_eq!(
        records[2].tollgate.asked.tier,
        tollgate_host::pricing::ServiceTier::Priority
    );

    // With room in the budget the same policy admits them all; nothing ran
    // them live, so each is charged its hold, priced as the gateway priced
    // it: the prompt at the cache-write price where it has a cache point,
    // every token at the priority price where priority was asked for.
    let text = std::fs::read_to_string(gateway.dir().join("tollgate.toml")).expect("config");
    let roomy = gateway.dir().join("roomy.toml");
    std::fs::write(&roomy, text.replace("budget-usd = \"0.00001\"", "budget-usd = \"100\"")).expect("write");
    let catalog = Catalog::embedded().in_region("us-east-1").expect("region");
    let held = |r: &InvocationRecord, caching: bool, asked: ServedAs| {
        let t = &r.tollgate;
        let model = t.requested_model_id.as_str();
        catalog
            .hold(model, t.estimated_input_tokens, t.max_output_tokens, caching, asked)
            .expect("priced")
            .get()
    };
    let standard = ServedAs::default();
    let priority = records[2].tollgate.asked;
    let expected =
        held(&records[0], true, standard) + held(&records[1], false, standard) + held(&records[2], false, priority);
    assert!(
        held(&records[0], true, standard) > held(&records[0], false, standard),
        "the cache write is dearer"
    );
    assert!(
        held(&records[2], false, priority) > held(&records[2], false, standard),
        "priority is dearer"
    );

    let out = json_of(&replay(&gateway, &roomy, &["--format", "json"]));
    let acme = &out["tenants"]["acme"];
    assert_eq!(acme["candidate"]["admit"], 3, "{out:#}");
    assert_eq!(acme["estimated_spend_nano_usd"], expected, "{out:#}");
    assert_eq!(acme["candidate_spend_nano_usd"], expected, "{out:#}");
}

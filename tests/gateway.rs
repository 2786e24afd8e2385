//! The gateway end to end: the real `tollgate serve` on a loopback port, a
//! mock Bedrock behind it, and tenants calling it with the real AWS SDK,
//! unchanged apart from the endpoint.

mod support;

use std::collections::BTreeSet;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, ConverseStreamOutput, InferenceConfiguration, Message,
};
use serde_json::Value;
use support::gateway::{Options, TenantSpec, TestGateway};
use tollgate_host::upstream::mock::{Fault, Faults, MockSettings};

const SONNET: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";
const PROMPT: &str = "Summarise the quarterly report in three short bullet points please";

fn user_message(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .expect("role and content are set")
}

fn reply_text(out: &aws_sdk_bedrockruntime::operation::converse::ConverseOutput) -> String {
    match out.output() {
        Some(ConverseOutput::Message(m)) => m.content()[0].as_text().expect("text").clone(),
        other => panic!("unexpected output {other:?}"),
    }
}

async fn converse(client: &Client, model: &str, max_tokens: i32) -> Result<String, String> {
    client
        .converse()
        .model_id(model)
        .messages(user_message(PROMPT))
        .inference_config(InferenceConfiguration::builder().max_tokens(max_tokens).build())
        .send()
        .await
        .map(|out| reply_text(&out))
        .map_err(|e| {
            let e = e.into_service_error();
            format!(
                "{}: {}",
                e.meta().code().unwrap_or("?"),
                e.meta().message().unwrap_or("")
            )
        })
}

fn acme() -> TenantSpec {
    TenantSpec::new("acme", "allow-all")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_and_stream_return_the_mocks_reply_with_merged_metadata() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());

    let out = client
        .converse()
        .model_id(SONNET)
        .messages(user_message(PROMPT))
        .request_metadata("user", "u-42")
        .request_metadata("use-case", "reports")
        .request_metadata("team", "finance")
        .send()
        .await
        .expect("converse through the gateway");
    let text = reply_text(&out);
    assert!(text.starts_with(&format!("Mock reply from {SONNET}")), "{text}");
    let usage = out.usage().expect("usage");

    let mut stream = client
        .converse_stream()
        .model_id(SONNET)
        .messages(user_message(PROMPT))
        .send()
        .await
        .expect("converse-stream through the gateway");
    let mut streamed = String::new();
    let mut stream_usage = None;
    while let Some(event) = stream.stream.recv().await.expect("stream event") {
        match event {
            ConverseStreamOutput::ContentBlockDelta(d) => {
                if let Some(delta) = d.delta()
                    && let Ok(t) = delta.as_text()
                {
                    streamed.push_str(t);
                }
            }
            ConverseStreamOutput::Metadata(m) => stream_usage = m.usage().cloned(),
            _ => {}
        }
    }
    assert_eq!(streamed, text, "the stream carries the same reply");
    let stream_usage = stream_usage.expect("the final metadata event carries usage");
    assert_eq!(stream_usage.output_tokens(), usage.output_tokens());

    // What reached Bedrock: the caller's pairs plus tollgate's, within the limits.
    let requests = gw.mock.requests();
    assert_eq!(requests.len(), 2);
    let metadata = requests[0].request_metadata().expect("metadata forwarded");
    assert_eq!(metadata["tollgate-tenant"], "acme");
    assert_eq!(metadata["tollgate-decision"], "admit");
    assert_eq!(metadata["tollgate-policy-version"], "acme@v1");
    assert_eq!(metadata["tollgate-user"], "u-42");
    assert_eq!(metadata["tollgate-use-case"], "reports");
    assert_eq!(metadata["team"], "finance");
    assert!(metadata.len() <= 16);
    assert!(!metadata.contains_key("tollgate-original-model"));
    // The gateway's own credentials (none, for the mock) are used upstream, never the tenant's.
    assert!(requests[0].header("authorization").is_none());

    // Both calls were charged from their usage.
    let state = gw.settled("acme").await;
    let records = gw.records();
    assert_eq!(records.len(), 2);
    let charged: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    assert!(charged > 0);
    assert_eq!(state["spent-nano-usd"], charged);
    assert_eq!(state["reserved-nano-usd"], 0);
    for r in &records {
        assert_eq!(r.tollgate.charged_from, "usage");
    }
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_metadata_cannot_spoof_the_tenant_and_stays_within_bedrocks_limits() {
    let globex = TenantSpec::new("globex", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme(), globex],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());
    let mut call = client
        .converse()
        .model_id(NOVA_MICRO)
        .messages(user_message(PROMPT))
        .request_metadata("tollgate-tenant", "globex")
        .request_metadata("tenant", "globex")
        .request_metadata("tenant-id", "globex");
    for i in 0..13 {
        call = call.request_metadata(format!("k{i:02}"), format!("v{i}"));
    }
    call.send().await.expect("call succeeds");

    let requests = gw.mock.requests();
    let metadata = requests[0].request_metadata().expect("metadata");
    assert_eq!(metadata.len(), 16, "{metadata:?}");
    assert_eq!(metadata["tollgate-tenant"], "acme");
    // The caller's own "tenant" pair is kept as data, but decides nothing.
    let keys: BTreeSet<&str> = metadata.keys().map(String::as_str).collect();
    assert!(keys.contains("tollgate-decision"));
    assert!(keys.contains("tollgate-policy-version"));
    for key in &keys {
        assert!((1..=256).contains(&key.chars().count()));
    }

    let acme_state = gw.settled("acme").await;
    let globex_state = gw.settled("globex").await;
    assert!(acme_state["spent-nano-usd"].as_u64().expect("spent") > 0);
    assert_eq!(globex_state["spent-nano-usd"], 0, "the forged tenant was charged");
    let record = &gw.records()[0];
    assert_eq!(record.tollgate.tenant, "acme");
    assert!(
        record
            .tollgate
            .dropped_metadata
            .iter()
            .any(|d| d.starts_with("tollgate-tenant")),
        "{:?}",
        record.tollgate.dropped_metadata
    );
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_reaches_the_cheaper_model_with_the_cap_applied() {
    let globex = TenantSpec {
        tier: "free",
        extra: "included-tokens = 1000000",
        policy_config: "free-max-output-tokens = 200",
        ..TenantSpec::new("globex", "tiered")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![globex],
        ..Options::default()
    })
    .await;
    let globex = TenantSpec::new("globex", "tiered");
    let text = converse(&gw.sigv4_client(&globex), SONNET, 4096)
        .await
        .expect("downgraded call succeeds");
    assert!(text.starts_with(&format!("Mock reply from {NOVA_MICRO}")), "{text}");

    let request = &gw.mock.requests()[0];
    assert_eq!(request.model_id, NOVA_MICRO);
    let body = request.body.as_ref().expect("body");
    assert_eq!(body["inferenceConfig"]["maxTokens"], 200, "the verdict's cap");
    let metadata = request.request_metadata().expect("metadata");
    assert_eq!(metadata["tollgate-decision"], "downgrade");
    assert_eq!(metadata["tollgate-original-model"], SONNET);
    // The verdict's own pairs are attached too.
    assert_eq!(metadata["tier"], "free");

    // The response says which model served it.
    let raw = gw
        .raw()
        .post(format!("{}/model/{SONNET}/converse", gw.url))
        .bearer_auth(globex.bearer_key())
        .json(&serde_json::json!({"messages": [{"role": "user", "content": [{"text": PROMPT}]}]}))
        .send()
        .await
        .expect("raw call");
    assert_eq!(raw.status(), 200);
    assert_eq!(raw.headers()["x-tollgate-served-model"], NOVA_MICRO);
    assert_eq!(raw.headers()["x-tollgate-decision"], "downgrade");

    gw.settled("globex").await;
    let record = &gw.records()[0];
    assert_eq!(record.tollgate.decision, "downgrade");
    assert_eq!(record.tollgate.requested_model_id, SONNET);
    assert_eq!(record.tollgate.served_model_id.as_deref(), Some(NOVA_MICRO));
    assert_eq!(record.model_id, NOVA_MICRO);
    assert_eq!(
        record.request_metadata["tier"], "free",
        "the log shows what was forwarded"
    );
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdict_metadata_wins_over_the_callers_and_a_fail_open_call_is_flagged() {
    let globex = TenantSpec {
        tier: "enterprise",
        ..TenantSpec::new("globex", "tiered")
    };
    let broken = TenantSpec {
        extra: "failure-mode = \"open\"",
        ..TenantSpec::new("broken", "trap")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![globex, broken],
        ..Options::default()
    })
    .await;

    // The caller sets the same key the policy sets: the policy's word is forwarded.
    gw.sigv4_client(&TenantSpec::new("globex", "tiered"))
        .converse()
        .model_id(NOVA_MICRO)
        .messages(user_message(PROMPT))
        .request_metadata("tier", "platinum")
        .request_metadata("team", "finance")
        .send()
        .await
        .expect("admitted");
    let requests = gw.mock.requests();
    let metadata = requests[0].request_metadata().expect("metadata");
    assert_eq!(metadata["tier"], "enterprise");
    assert_eq!(metadata["team"], "finance");
    assert!(!metadata.contains_key("tollgate-policy-failure"));

    // A failing policy of a fail-open tenant admits, flagged upstream and in the log.
    converse(&gw.sigv4_client(&TenantSpec::new("broken", "trap")), NOVA_MICRO, 50)
        .await
        .expect("fail-open admits");
    let requests = gw.mock.requests();
    let metadata = requests[1].request_metadata().expect("metadata");
    assert_eq!(metadata["tollgate-policy-failure"], "trap");
    assert_eq!(metadata["tollgate-decision"], "admit");

    gw.settled("globex").await;
    gw.settled("broken").await;
    let records = gw.wait_for_records(2).await;
    let globex = records
        .iter()
        .find(|r| r.tollgate.tenant == "globex")
        .expect("globex record");
    assert!(
        globex
            .tollgate
            .dropped_metadata
            .iter()
            .any(|d| d.starts_with("tier: the tenant's policy")),
        "{:?}",
        globex.tollgate.dropped_metadata
    );
    let broken = records
        .iter()
        .find(|r| r.tollgate.tenant == "broken")
        .expect("broken record");
    assert_eq!(broken.request_metadata["tollgate-policy-failure"], "trap");
    assert!(
        broken.tollgate.cost_nano_usd > 0,
        "a fail-open call is charged like any other"
    );
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_is_a_throttling_exception_and_a_reject_explains_itself() {
    let limited = TenantSpec {
        extra: "rpm = 2",
        ..TenantSpec::new("limited", "allow-all")
    };
    let poor = TenantSpec {
        budget_usd: "0.00002",
        ..TenantSpec::new("poor", "budget-guard")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![limited, poor],
        ..Options::default()
    })
    .await;

    let limited = gw.sigv4_client(&TenantSpec::new("limited", "allow-all"));
    converse(&limited, NOVA_MICRO, 50).await.expect("first call");
    converse(&limited, NOVA_MICRO, 50).await.expect("second call");
    // Two requests a minute: within three more calls one is throttled, even
    // when the calls straddle a minute's boundary.
    let mut throttled = None;
    for _ in 0..3 {
        let sent = limited
            .converse()
            .model_id(NOVA_MICRO)
            .messages(user_message(PROMPT))
            .send()
            .await;
        if let Err(err) = sent {
            throttled = Some(err.into_service_error());
            break;
        }
    }
    let err = throttled.expect("a third call in the minute is throttled");
    assert!(err.is_throttling_exception(), "{err:?}");
    assert!(format!("{err:?}").contains("requests-per-minute"), "{err:?}");

    // Retry-After is set, so SDK retries back off.
    let raw = gw
        .raw()
        .post(format!("{}/model/{NOVA_MICRO}/converse", gw.url))
        .bearer_auth(TenantSpec::new("limited", "").bearer_key())
        .json(&serde_json::json!({"messages": [{"role": "user", "content": [{"text": PROMPT}]}]}))
        .send()
        .await
        .expect("raw call");
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["x-amzn-errortype"], "ThrottlingException");
    let retry_after: u64 = raw.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));

    // A tiny budget: calls go through until it is spent, then a reject names it.
    let poor = gw.sigv4_client(&TenantSpec::new("poor", ""));
    let mut rejection = None;
    for _ in 0..20 {
        match converse(&poor, NOVA_MICRO, 50).await {
            Ok(_) => {}
            Err(e) => {
                rejection = Some(e);
                break;
            }
        }
    }
    let rejection = rejection.expect("the budget ran out");
    assert!(rejection.starts_with("ServiceQuotaExceededException"), "{rejection}");
    assert!(rejection.contains("poor"), "{rejection}");
    assert!(rejection.contains("budget"), "{rejection}");
    assert!(rejection.contains('$'), "names the figures: {rejection}");
    assert!(rejection.contains("raise"), "says what to do: {rejection}");
    let state = gw.settled("poor").await;
    assert!(state["spent-nano-usd"].as_u64().expect("spent") <= 20_000);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimates_far_too_low_still_never_pass_the_budget() {
    // Input-heavy calls whose estimates are cut to 30%: every settle comes in
    // far above its hold, and admission by the byte-bounded ceiling keeps the
    // sum of the settles inside the budget anyway.
    let tight = TenantSpec {
        budget_usd: "0.002",
        ..TenantSpec::new("tight", "allow-all")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![tight],
        extra_toml: "[estimator]\ninput-scale-percent = 30\n",
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&TenantSpec::new("tight", ""));
    let prompt = "Summarise this paragraph of the quarterly report for the board. ".repeat(40);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let client = client.clone();
        let prompt = prompt.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0u32;
            for _ in 0..8 {
                let sent = client
                    .converse()
                    .model_id(NOVA_MICRO)
                    .messages(user_message(&prompt))
                    .inference_config(InferenceConfiguration::builder().max_tokens(20).build())
                    .send()
                    .await;
                admitted += u32::from(sent.is_ok());
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.expect("task");
    }
    let state = gw.settled("tight").await;
    let spent = state["spent-nano-usd"].as_u64().expect("spent");
    let records = gw.records();
    let over_hold = records
        .iter()
        .filter(|r| r.tollgate.cost_nano_usd > r.tollgate.reserved_nano_usd)
        .count();
    assert!(
        admitted > 0 && over_hold > 0,
        "admitted {admitted}, settled above the hold {over_hold}"
    );
    assert!(spent <= 2_000_000, "spent {spent} of a 2000000 budget");
    assert!(
        records.len() == 256 && (admitted as usize) < 256,
        "the budget ran out: {admitted}"
    );
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_overshoot_a_small_budget() {
    // About 25 calls' worth of budget, 64 callers, 4 calls each.
    let tight = TenantSpec {
        budget_usd: "0.0002",
        ..TenantSpec::new("tight", "allow-all")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![tight],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&TenantSpec::new("tight", ""));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..4 {
                outcomes.push(converse(&client, NOVA_MICRO, 60).await);
            }
            outcomes
        }));
    }
    let mut admitted = 0;
    let mut refused = 0;
    for task in tasks {
        for outcome in task.await.expect("task") {
            match outcome {
                Ok(_) => admitted += 1,
                Err(e) => {
                    assert!(e.starts_with("ServiceQuotaExceededException"), "{e}");
                    refused += 1;
                }
            }
        }
    }
    assert!(admitted > 0 && refused > 0, "admitted {admitted}, refused {refused}");
    let state = gw.settled("tight").await;
    let spent = state["spent-nano-usd"].as_u64().expect("spent");
    assert!(spent <= 200_000, "spent {spent} of a 200000 budget");
    // Every admitted call is in the ledger and in the log, once.
    let records = gw.records();
    assert_eq!(records.len(), 256);
    let charged: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    assert_eq!(charged, spent);
    assert_eq!(records.iter().filter(|r| r.tollgate.status == 200).count(), admitted);
    assert_eq!(gw.mock.requests().len(), admitted);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mid_stream_failure_and_a_disconnect_leave_the_ledger_correct() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        mock: MockSettings {
            stream_event_interval_ms: 20,
            ..MockSettings::default()
        },
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());

    // 1. The upstream fails mid-stream: the caller sees the error, the hold is charged.
    gw.mock.set_faults(Faults::Sequence(vec![Fault::MidStream]));
    let mut stream = client
        .converse_stream()
        .model_id(NOVA_MICRO)
        .messages(user_message(PROMPT))
        .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
        .send()
        .await
        .expect("stream starts");
    let mut failed = false;
    loop {
        match stream.stream.recv().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the caller saw the upstream's mid-stream error");
    let state = gw.settled("acme").await;
    let records = gw.records();
    assert_eq!(records.len(), 1);
    let failed_record = &records[0];
    assert_eq!(failed_record.tollgate.charged_from, "reservation");
    assert_eq!(
        failed_record.tollgate.cost_nano_usd,
        failed_record.tollgate.reserved_nano_usd
    );
    assert!(failed_record.tollgate.cost_nano_usd > 0);
    assert_eq!(state["spent-nano-usd"], failed_record.tollgate.cost_nano_usd);

    // 2. The caller walks away after the first event.
    gw.mock.set_faults(Faults::None);
    let mut stream = client
        .converse_stream()
        .model_id(NOVA_MICRO)
        .messages(user_message(&PROMPT.repeat(20)))
        .inference_config(InferenceConfiguration::builder().max_tokens(2000).build())
        .send()
        .await
        .expect("stream starts");
    stream.stream.recv().await.expect("first event").expect("an event");
    drop(stream);
    let records = gw.wait_for_records(2).await;
    let state = gw.settled("acme").await;
    assert_eq!(records.len(), 2);
    let gone = &records[1];
    // The stream was read on to its metadata event: the real usage, not the hold.
    assert_eq!(gone.tollgate.charged_from, "usage");
    assert!(gone.tollgate.cost_nano_usd < gone.tollgate.reserved_nano_usd);
    assert!(
        gone.tollgate.reason.contains("disconnected"),
        "{}",
        gone.tollgate.reason
    );
    assert_eq!(state["reserved-nano-usd"], 0);
    assert_eq!(
        state["spent-nano-usd"],
        failed_record.tollgate.cost_nano_usd + gone.tollgate.cost_nano_usd
    );
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_draining_off_a_stream_whose_caller_left_is_charged_its_hold() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        mock: MockSettings {
            stream_event_interval_ms: 20,
            ..MockSettings::default()
        },
        upstream_extra: "max-attempts = 1\nstream-drain-ms = 0",
        ..Options::default()
    })
    .await;
    let mut stream = gw
        .sigv4_client(&acme())
        .converse_stream()
        .model_id(NOVA_MICRO)
        .messages(user_message(&PROMPT.repeat(20)))
        .inference_config(InferenceConfiguration::builder().max_tokens(500).build())
        .send()
        .await
        .expect("stream starts");
    stream.stream.recv().await.expect("first event").expect("an event");
    drop(stream);
    let state = gw.settled("acme").await;
    let gone = &gw.wait_for_records(1).await[0].tollgate;
    assert_eq!(gone.charged_from, "reservation");
    assert_eq!(gone.cost_nano_usd, gone.reserved_nano_usd);
    assert!(gone.reason.contains("disconnected"), "{}", gone.reason);
    assert_eq!(state["spent-nano-usd"], gone.cost_nano_usd);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_stream_max_is_cut_and_charged_its_hold() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        mock: MockSettings {
            stream_event_interval_ms: 50,
            ..MockSettings::default()
        },
        upstream_extra: "max-attempts = 1\nstream-max-ms = 300",
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());
    let mut stream = client
        .converse_stream()
        .model_id(NOVA_MICRO)
        .messages(user_message(&PROMPT.repeat(20)))
        .inference_config(InferenceConfiguration::builder().max_tokens(500).build())
        .send()
        .await
        .expect("stream starts");
    let mut failed = false;
    loop {
        match stream.stream.recv().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the caller is told the stream was cut");
    let state = gw.settled("acme").await;
    let records = gw.wait_for_records(1).await;
    let cut = &records[0].tollgate;
    assert!(cut.reason.contains("stream-max-ms"), "{}", cut.reason);
    assert_eq!(cut.charged_from, "reservation");
    assert_eq!(cut.cost_nano_usd, cut.reserved_nano_usd);
    assert_eq!(state["spent-nano-usd"], cut.cost_nano_usd);
    assert_eq!(state["reserved-nano-usd"], 0);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_has_one_matching_invocation_record() {
    let limited = TenantSpec {
        extra: "rpm = 3",
        ..TenantSpec::new("acme", "allow-all")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![limited],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());
    let mut usages = Vec::new();
    for _ in 0..2 {
        let out = client
            .converse()
            .model_id(NOVA_MICRO)
            .messages(user_message(PROMPT))
            .request_metadata("user", "u-7")
            .send()
            .await
            .expect("call");
        usages.push(out.usage().cloned().expect("usage"));
    }
    let mut stream = client
        .converse_stream()
        .model_id(NOVA_MICRO)
        .messages(user_message(PROMPT))
        .send()
        .await
        .expect("stream");
    while stream.stream.recv().await.expect("event").is_some() {}
    let throttled = converse(&client, NOVA_MICRO, 50).await.expect_err("rpm 3");
    assert!(throttled.starts_with("ThrottlingException"), "{throttled}");

    gw.settled("acme").await;
    let records = gw.records();
    assert_eq!(records.len(), 4, "{records:#?}");
    let upstream = gw.mock.requests();
    for (i, record) in records.iter().take(3).enumerate() {
        assert_eq!(record.schema_type, "ModelInvocationLog");
        assert_eq!(record.model_id, NOVA_MICRO);
        assert_eq!(record.tollgate.tenant, "acme");
        assert_eq!(record.tollgate.decision, "admit");
        assert_eq!(record.tollgate.status, 200);
        assert!(record.timestamp.ends_with('Z'));
        // The metadata in the record is exactly what reached Bedrock.
        let sent = upstream[i].request_metadata().expect("metadata");
        assert_eq!(&record.request_metadata, sent);
        // Bedrock's request id joins the record to Bedrock's own log.
        assert_eq!(record.request_id, mock_request_id(i));
        assert!(record.tollgate.cost_nano_usd > 0);
        assert!(record.tollgate.latency.total_ms >= record.tollgate.latency.upstream_ms);
    }
    for (record, usage) in records.iter().zip(&usages) {
        assert_eq!(record.operation, "Converse");
        assert_eq!(record.input.input_token_count, Some(usage.input_tokens() as u64));
        assert_eq!(record.output.output_token_count, Some(usage.output_tokens() as u64));
        assert_eq!(record.request_metadata["tollgate-user"], "u-7");
    }
    assert_eq!(records[2].operation, "ConverseStream");
    assert!(records[2].output.output_token_count.unwrap_or(0) > 0);
    let throttled = &records[3];
    assert_eq!(throttled.tollgate.decision, "throttle");
    assert_eq!(throttled.tollgate.status, 429);
    assert_eq!(throttled.tollgate.cost_nano_usd, 0);
    assert_eq!(throttled.input.input_token_count, None);
    gw.reconcile().await;
}

/// The mock numbers its request ids from 0, in arrival order.
fn mock_request_id(index: usize) -> String {
    format!("00000000-0000-4000-8000-{index:012x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_the_gateway_does_not_edit_reach_bedrock_unchanged() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        ..Options::default()
    })
    .await;
    let body: Value = serde_json::json!({
        "messages": [{
            "role": "user",
            "content": [
                {"text": "Describe the image and the document"},
                {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}}},
                {"document": {"format": "txt", "name": "notes", "source": {"bytes": "SGVsbG8gd29ybGQ="}}},
                {"cachePoint": {"type": "default"}}
            ]
        }],
        "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.25, "topP": 0.9, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "lookup", "description": "Looks up a record",
                "inputSchema": {"json": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}}}],
            "toolChoice": {"auto": {}}
        },
        "guardrailConfig": {"guardrailIdentifier": "gr-123", "guardrailVersion": "1", "trace": "enabled"},
        "additionalModelRequestFields": {"top_k": 40, "thinking": {"type": "disabled"}},
        "additionalModelResponseFieldPaths": ["/stop_sequence"],
        "promptVariables": {"name": {"text": "Ada"}},
        "performanceConfig": {"latency": "standard"},
        "aFieldFromTheFuture": {"nested": [1, 2.5, "three", null, true]},
        "requestMetadata": {"team": "finance"}
    });
    let response = gw
        .raw()
        .post(format!("{}/model/{SONNET}/converse", gw.url))
        .bearer_auth(acme().bearer_key())
        .json(&body)
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    let arrived = gw.mock.requests()[0].body.clone().expect("body");
    let mut expected = body.clone();
    let mut arrived_without_metadata = arrived.clone();
    let metadata = arrived_without_metadata
        .as_object_mut()
        .expect("object")
        .remove("requestMetadata")
        .expect("metadata");
    expected.as_object_mut().expect("object").remove("requestMetadata");
    assert_eq!(arrived_without_metadata, expected, "only requestMetadata may differ");
    assert_eq!(metadata["team"], "finance");
    assert_eq!(metadata["tollgate-tenant"], "acme");
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_bedrock_shaped_errors() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        server_extra: "max-body-bytes = 65536",
        ..Options::default()
    })
    .await;
    let raw = gw.raw();
    let url = format!("{}/model/{NOVA_MICRO}/converse", gw.url);
    let key = acme().bearer_key();
    let check = |status: u16, error_type: &'static str, needle: &'static str| {
        move |response: (u16, String, String)| {
            assert_eq!(response.0, status, "{response:?}");
            assert_eq!(response.1, error_type, "{response:?}");
            assert!(response.2.contains(needle), "{needle:?} not in {response:?}");
        }
    };
    async fn send(req: reqwest::RequestBuilder) -> (u16, String, String) {
        let r = req.send().await.expect("answered");
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let body: Value = r.json().await.expect("a JSON error body");
        (status, kind, body["message"].as_str().unwrap_or("").to_owned())
    }
    check(400, "ValidationException", "not valid JSON")(
        send(raw.post(&url).bearer_auth(&key).body("{\"messages\": [")).await,
    );
    check(400, "ValidationException", "gpt-4")(
        send(
            raw.post(format!("{}/model/gpt-4/converse", gw.url))
                .bearer_auth(&key)
                .body("{\"messages\":[]}"),
        )
        .await,
    );
    check(413, "ValidationException", "65536")(send(raw.post(&url).bearer_auth(&key).body(vec![b' '; 100_000])).await);
    // Bedrock's own limit on a model id: 2048 bytes.
    check(400, "ValidationException", "2048 bytes")(
        send(
            raw.post(format!("{}/model/{}/converse", gw.url, "m".repeat(2049)))
                .bearer_auth(&key)
                .body("{\"messages\":[]}"),
        )
        .await,
    );
    check(400, "ValidationException", "requestMetadata")(
        send(
            raw.post(&url)
                .bearer_auth(&key)
                .body(r#"{"messages":[],"requestMetadata":{"bad key!":"x"}}"#),
        )
        .await,
    );
    let (status, kind, _) = send(raw.post(&url).body("{}")).await;
    assert_eq!(status, 403, "no credential");
    assert!(!kind.is_empty());
    let (status, _, message) = send(raw.post(&url).bearer_auth("not-a-key-of-anyone-at-all").body("{}")).await;
    assert_eq!(status, 403, "wrong credential");
    assert!(!message.contains("not-a-key"), "the key is never echoed: {message}");

    // Through the SDK, an unknown model is a ValidationException too.
    let err = converse(&gw.sigv4_client(&acme()), "acme.unknown-model-v1:0", 10)
        .await
        .expect_err("unknown model");
    assert!(err.starts_with("ValidationException"), "{err}");
    // Nothing reached the upstream, and nothing was charged.
    assert!(gw.mock.requests().is_empty());
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], 0);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_bedrock_api_key_as_the_sdk_sends_it() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        https: true,
        ..Options::default()
    })
    .await;
    assert!(gw.url.starts_with("https://127.0.0.1:"), "{}", gw.url);
    let text = converse(&gw.bearer_client(&acme()), NOVA_MICRO, 50)
        .await
        .expect("bearer over HTTPS");
    assert!(text.starts_with("Mock reply"), "{text}");
    let text = converse(&gw.sigv4_client(&acme()), NOVA_MICRO, 50)
        .await
        .expect("SigV4 over HTTPS");
    assert!(text.starts_with("Mock reply"), "{text}");
    assert!(gw.admin_url.starts_with("https://127.0.0.1:"), "{}", gw.admin_url);
    let health = gw
        .raw()
        .get(format!("{}/readyz", gw.admin_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(health.status(), 200);
    // Nothing about other tenants answers on the tenant listener.
    for path in ["/readyz", "/metrics", "/admin/tenants", "/admin/idle"] {
        let response = gw
            .raw()
            .get(format!("{}{path}", gw.url))
            .bearer_auth(support::gateway::ADMIN_TOKEN)
            .send()
            .await
            .expect("tenant listener");
        assert_eq!(response.status(), 404, "{path}");
    }
    assert_eq!(gw.healthz().await, 200);
    let metrics = gw
        .raw()
        .get(format!("{}/metrics", gw.admin_url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("tollgate_decisions_total{tenant=\"acme\",verdict=\"admit\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tollgate_policy_decision_seconds_bucket"), "{metrics}");
    assert!(metrics.contains("tollgate_upstream_seconds"), "{metrics}");
    assert!(metrics.contains("tollgate_alert_level{tenant=\"acme\"}"), "{metrics}");
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converse_caller_that_hangs_up_is_still_charged_from_the_real_usage() {
    // The upstream takes a second; the caller gives up after a fifth of it.
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        mock: MockSettings {
            latency_ms: 1_000,
            ..MockSettings::default()
        },
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());
    let impatient = aws_sdk_bedrockruntime::config::Config::builder().timeout_config(
        aws_smithy_types::timeout::TimeoutConfig::builder()
            .operation_timeout(std::time::Duration::from_millis(200))
            .build(),
    );
    let err = client
        .converse()
        .model_id(NOVA_MICRO)
        .messages(user_message(PROMPT))
        .customize()
        .config_override(impatient)
        .send()
        .await
        .expect_err("the caller hangs up before the answer");
    assert!(format!("{err:?}").to_lowercase().contains("timeout"), "{err:?}");

    // The gateway finishes the call on its own: one record, charged from the
    // usage the upstream reported, and nothing left in flight.
    let records = gw.wait_for_records(1).await;
    let state = gw.settled("acme").await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0];
    assert_eq!(record.tollgate.charged_from, "usage");
    assert!(record.output.output_token_count.is_some_and(|n| n > 0));
    assert!(record.tollgate.cost_nano_usd > 0);
    assert!(record.tollgate.cost_nano_usd <= record.tollgate.reserved_nano_usd);
    assert_eq!(state["spent-nano-usd"], record.tollgate.cost_nano_usd);
    assert_eq!(state["reserved-nano-usd"], 0);
    assert_eq!(gw.mock.requests().len(), 1, "the upstream ran the call once");

    // The gateway is still healthy for the next call.
    converse(&client, NOVA_MICRO, 50)
        .await
        .expect("the next call is served");
    assert_eq!(gw.wait_for_records(2).await.len(), 2);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_call_carries_the_reserved_max_tokens_even_on_a_profile_arn() {
    const PROFILE: &str = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/acmenova";
    let tenant = TenantSpec {
        extra: "inference-profiles = { \"amazon.nova-micro-v1:0\" = \"arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/acmenova\" }",
        ..acme()
    };
    let gw = TestGateway::start(Options {
        tenants: vec![tenant],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());

    // No inferenceConfig at all, on the tenant's profile ARN.
    client
        .converse()
        .model_id(PROFILE)
        .messages(user_message(PROMPT))
        .send()
        .await
        .expect("served");
    let records = gw.wait_for_records(1).await;
    let record = &records[0];
    // The default is the base model's maximum (Nova: 10,000), not a guess
    // made from the ARN, and it is what the upstream was told.
    assert_eq!(record.tollgate.max_output_tokens, 10_000);
    let sent = gw.mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].model_id, PROFILE);
    let body = sent[0].body.as_ref().expect("json body");
    assert_eq!(body["inferenceConfig"]["maxTokens"], 10_000);
    let state = gw.settled("acme").await;
    assert_eq!(state["spent-nano-usd"], record.tollgate.cost_nano_usd);
    assert!(record.tollgate.cost_nano_usd <= record.tollgate.reserved_nano_usd);

    // A caller's own cap is kept, and a larger one than needed is not raised.
    converse(&client, PROFILE, 77).await.expect("served");
    let sent = gw.mock.requests();
    assert_eq!(
        sent[1].body.as_ref().expect("json body")["inferenceConfig"]["maxTokens"],
        77
    );
    assert_eq!(gw.wait_for_records(2).await[1].tollgate.max_output_tokens, 77);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_name_or_downgrade_to_another_tenants_profile() {
    const ACME_PROFILE: &str = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/acmenova";
    let owner = TenantSpec {
        extra: "inference-profiles = { \"amazon.nova-micro-v1:0\" = \"arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/acmenova\" }",
        ..acme()
    };
    let thief = TenantSpec::new("globex", "allow-all");
    // A free-tier policy whose downgrade target is acme's profile.
    let sly = TenantSpec {
        tier: "free",
        extra: "included-tokens = 1000000",
        policy_config: "free-model = \"arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/acmenova\"",
        ..TenantSpec::new("initech", "tiered")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![owner, thief, sly],
        ..Options::default()
    })
    .await;

    let err = gw
        .sigv4_client(&TenantSpec::new("globex", "allow-all"))
        .converse()
        .model_id(ACME_PROFILE)
        .messages(user_message(PROMPT))
        .send()
        .await
        .expect_err("another tenant's profile")
        .into_service_error();
    assert!(err.is_access_denied_exception(), "{err:?}");
    let text = format!("{err:?}");
    assert!(text.contains("not one of tenant globex's"), "{text}");

    // The policy's downgrade to it is an invalid verdict: the tenant fails closed.
    let err = gw
        .sigv4_client(&TenantSpec::new("initech", "tiered"))
        .converse()
        .model_id(SONNET)
        .messages(user_message(PROMPT))
        .send()
        .await
        .expect_err("downgrade to another tenant's profile");
    let text = format!("{:?}", err.into_service_error());
    assert!(text.contains("another tenant"), "{text}");
    assert!(gw.mock.requests().is_empty(), "nothing reached Bedrock");

    // The owner still uses it, and only the owner was charged.
    converse(&gw.sigv4_client(&acme()), ACME_PROFILE, 50)
        .await
        .expect("the owner's call");
    assert_eq!(gw.mock.requests().len(), 1);
    assert!(gw.settled("acme").await["spent-nano-usd"].as_u64().expect("spent") > 0);
    assert_eq!(gw.settled("globex").await["spent-nano-usd"], 0);
    assert_eq!(gw.settled("initech").await["spent-nano-usd"], 0);
    let records = gw.wait_for_records(3).await;
    let initech = records
        .iter()
        .find(|r| r.tollgate.tenant == "initech")
        .expect("initech record");
    assert_eq!(initech.tollgate.cost_nano_usd, 0);
    assert!(
        initech
            .tollgate
            .policy_failure
            .as_deref()
            .is_some_and(|f| f.contains("another tenant")),
        "{:?}",
        initech.tollgate.policy_failure
    );
    gw.reconcile().await;
}

/// One Converse call that sees each error as it is (no SDK retries), with its status.
async fn converse_status(client: &Client) -> Result<(), String> {
    client
        .converse()
        .model_id(NOVA_MICRO)
        .messages(user_message(PROMPT))
        .inference_config(InferenceConfiguration::builder().max_tokens(100).build())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", e.into_service_error()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_times_out_after_the_send_is_charged_once_and_not_retried() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        mock: MockSettings {
            latency_ms: 1_500,
            ..MockSettings::default()
        },
        // Retries are allowed, so a retry would show.
        upstream_extra: "max-attempts = 3\ninitial-backoff-ms = 1\ntimeout-ms = 300",
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());
    let err = converse_status(&client).await.expect_err("the upstream timed out");
    assert!(err.contains("ModelTimeout") || err.contains("charged"), "{err}");

    let records = gw.wait_for_records(1).await;
    let state = gw.settled("acme").await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.tollgate.status, 504);
    assert_eq!(record.tollgate.charged_from, "reservation");
    assert!(record.tollgate.cost_nano_usd > 0);
    assert_eq!(record.tollgate.cost_nano_usd, record.tollgate.reserved_nano_usd);
    assert_eq!(state["spent-nano-usd"], record.tollgate.cost_nano_usd);
    assert_eq!(
        gw.mock.requests().len(),
        1,
        "a call that may have run is not sent again"
    );
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbilled_refusals_are_retried_and_released_and_a_5xx_after_the_send_is_charged() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        upstream_extra: "max-attempts = 3\ninitial-backoff-ms = 1\nmax-backoff-ms = 5",
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());

    // 429 then 503, then an answer: retried by tollgate, charged once from usage.
    gw.mock
        .set_faults(Faults::Sequence(vec![Fault::Throttle, Fault::ServiceUnavailable]));
    converse_status(&client).await.expect("the third attempt answers");
    assert_eq!(gw.mock.requests().len(), 3);
    let records = gw.wait_for_records(1).await;
    let first = &records[0];
    assert_eq!(first.tollgate.charged_from, "usage");
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], first.tollgate.cost_nano_usd);

    // Three throttles: the refusal reaches the caller, nothing is charged.
    gw.mock.clear_requests();
    gw.mock.set_faults(Faults::Sequence(vec![Fault::Throttle; 3]));
    let err = converse_status(&client).await.expect_err("throttled throughout");
    assert!(err.contains("ThrottlingException"), "{err}");
    assert_eq!(gw.mock.requests().len(), 3);
    let records = gw.wait_for_records(2).await;
    assert_eq!(records[1].tollgate.charged_from, "released");
    assert_eq!(records[1].tollgate.cost_nano_usd, 0);
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], first.tollgate.cost_nano_usd);

    // A 500 came after the call reached the model: not retried, charged at its hold.
    gw.mock.clear_requests();
    gw.mock.set_faults(Faults::Sequence(vec![Fault::InternalError]));
    let err = converse_status(&client).await.expect_err("internal error");
    assert!(err.contains("InternalServerException"), "{err}");
    assert_eq!(gw.mock.requests().len(), 1);
    let records = gw.wait_for_records(3).await;
    let failed = &records[2];
    assert_eq!(failed.tollgate.charged_from, "reservation");
    assert_eq!(failed.tollgate.cost_nano_usd, failed.tollgate.reserved_nano_usd);
    let state = gw.settled("acme").await;
    assert_eq!(
        state["spent-nano-usd"],
        first.tollgate.cost_nano_usd + failed.tollgate.cost_nano_usd
    );
    assert_eq!(records.len(), 3, "one record per call, retries included");
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_hang_up_at_any_point_leave_every_call_charged_once() {
    // 200 ms before the first byte, then a stream event every 20 ms.
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        mock: MockSettings {
            latency_ms: 200,
            stream_event_interval_ms: 20,
            ..MockSettings::default()
        },
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());
    let prompt = PROMPT.repeat(10);
    let cut = std::time::Duration::from_millis;
    // (stream?, hang up after) — before the answer, mid-stream, and never.
    let plan = [
        (false, Some(cut(50))),
        (false, None),
        (true, Some(cut(50))),
        (true, Some(cut(260))),
        (true, None),
    ];
    for (stream, hang_up) in plan {
        let call = async {
            if stream {
                let mut out = client
                    .converse_stream()
                    .model_id(NOVA_MICRO)
                    .messages(user_message(&prompt))
                    .inference_config(InferenceConfiguration::builder().max_tokens(300).build())
                    .send()
                    .await
                    .expect("stream starts");
                while out.stream.recv().await.expect("event").is_some() {}
            } else {
                converse(&client, NOVA_MICRO, 300).await.expect("answered");
            }
        };
        match hang_up {
            Some(after) => assert!(tokio::time::timeout(after, call).await.is_err(), "hung up"),
            None => call.await,
        }
    }
    let state = gw.settled("acme").await;
    let records = gw.wait_for_records(plan.len()).await;
    assert_eq!(records.len(), plan.len(), "one record per call");
    assert_eq!(gw.mock.requests().len(), plan.len(), "every call reached the upstream");
    let mut from: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.operation.as_str(), r.tollgate.charged_from.as_str()))
        .collect();
    from.sort_unstable();
    // A Converse runs to its answer whoever waits for it; a stream whose caller
    // left is read on to its metadata event (docs/charging.md).
    assert_eq!(
        from,
        [
            ("Converse", "usage"),
            ("Converse", "usage"),
            ("ConverseStream", "usage"),
            ("ConverseStream", "usage"),
            ("ConverseStream", "usage")
        ]
    );
    assert!(records.iter().all(|r| r.tollgate.cost_nano_usd > 0));
    let charged: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    assert_eq!(state["spent-nano-usd"], charged);
    assert_eq!(state["reserved-nano-usd"], 0);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_that_costs_more_is_refused_unless_the_tenant_allows_it() {
    // The "free" model is Opus 4: every Nova Micro call would go up in price.
    let spec = |id: &'static str, extra: &'static str| TenantSpec {
        tier: "free",
        extra,
        policy_config: "free-model = \"anthropic.claude-opus-4-20250514-v1:0\"",
        ..TenantSpec::new(id, "tiered")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![
            spec("strict", "included-tokens = 1000000"),
            spec("lenient", "included-tokens = 1000000\nallow-costlier-downgrade = true"),
        ],
        ..Options::default()
    })
    .await;
    let err = converse(&gw.sigv4_client(&TenantSpec::new("strict", "")), NOVA_MICRO, 50)
        .await
        .expect_err("a costlier downgrade is an invalid verdict; the tenant fails closed");
    assert!(
        err.contains("would hold") && err.contains("allow-costlier-downgrade"),
        "{err}"
    );
    assert!(gw.mock.requests().is_empty(), "nothing reached Bedrock");

    converse(&gw.sigv4_client(&TenantSpec::new("lenient", "")), NOVA_MICRO, 50)
        .await
        .expect("allowed for this tenant");
    assert_eq!(gw.mock.requests()[0].model_id, "anthropic.claude-opus-4-20250514-v1:0");
    assert_eq!(gw.settled("strict").await["spent-nano-usd"], 0);
    assert!(gw.settled("lenient").await["spent-nano-usd"].as_u64().expect("spent") > 0);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_failing_on_every_call_cannot_flood_the_log() {
    let broken = TenantSpec {
        extra: "failure-mode = \"open\"",
        ..TenantSpec::new("broken", "trap")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![broken],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&TenantSpec::new("broken", ""));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                converse(&client, NOVA_MICRO, 20).await.expect("fail-open admits");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let seconds = started.elapsed().as_secs() + 1;
    gw.settled("broken").await;
    let log = std::fs::read_to_string(gw.dir().join("stderr.log")).expect("stderr");
    let lines = log.lines().filter(|l| l.contains("policy failed;")).count() as u64;
    // 400 failures; at most 5 lines a second get through, the rest are counted
    // (the calls may span one more wall-clock second than they last).
    assert!(
        lines >= 1 && lines <= 5 * (seconds + 1),
        "{lines} lines in {seconds} s:\n{log}"
    );
    // The breaker's own line comes once per trip, at most one a cooldown.
    let trips = log
        .lines()
        .filter(|l| l.contains("policy failed too many calls"))
        .count() as u64;
    assert!(trips <= seconds + 1, "{trips} trips in {seconds} s:\n{log}");
    assert!(log.contains("suppressed"), "{log}");
    assert_eq!(gw.records().len(), 400, "every call still has its record");
    gw.reconcile().await;
}

/// Sends the headers of a POST announcing `content_length` bytes, and only
/// a few of them; returns the status line the gateway answers with anyway.
fn answer_without_the_body(url: &str, path: &str, authorization: &str, content_length: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    // Only an upper bound for a broken gateway; a good one answers at once.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {authorization}\r\n\
         content-type: application/json\r\ncontent-length: {content_length}\r\n\r\n{{\"messages\":"
    )
    .expect("send headers");
    let mut status = String::new();
    BufReader::new(stream)
        .read_line(&mut status)
        .expect("a status line before the body was sent");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_the_headers_refuse_are_answered_before_their_body_is_read() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        ..Options::default()
    })
    .await;
    let (url, admin_url) = (gw.url.clone(), gw.admin_url.clone());
    let statuses = tokio::task::spawn_blocking(move || {
        [
            // An unknown bearer key announcing 20 MB.
            answer_without_the_body(
                &url,
                "/model/amazon.nova-micro-v1%3A0/converse",
                "Bearer not-a-key-of-any-tenant",
                20_000_000,
            ),
            // A SigV4 header for an access key no tenant has.
            answer_without_the_body(
                &url,
                "/model/amazon.nova-micro-v1%3A0/converse",
                "AWS4-HMAC-SHA256 Credential=AKIDNOBODY/20260101/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00",
                20_000_000,
            ),
            // A policy upload with a wrong admin token.
            answer_without_the_body(
                &admin_url,
                "/admin/tenants/acme/policy",
                "Bearer wrong-token",
                50_000_000,
            ),
            // The admin API does not exist on the tenant listener.
            answer_without_the_body(
                &url,
                "/admin/tenants/acme/policy",
                &format!("Bearer {}", support::gateway::ADMIN_TOKEN),
                50_000_000,
            ),
        ]
    })
    .await
    .expect("join");
    assert!(statuses[0].contains(" 403 "), "{statuses:?}");
    assert!(statuses[1].starts_with("HTTP/1.1 4"), "{statuses:?}");
    assert!(statuses[2].contains(" 401 "), "{statuses:?}");
    assert!(statuses[3].contains(" 404 "), "{statuses:?}");
    // Nothing was decided or charged, and the gateway still serves.
    converse(&gw.sigv4_client(&acme()), NOVA_MICRO, 20)
        .await
        .expect("served");
    gw.reconcile().await;
}

//! The SDK interceptor: an unchanged `client.converse()` /
//! `client.converse_stream()` on `aws-sdk-bedrockruntime`, answered through
//! tollgate in process (no tollgate listener), against the built-in mock.

mod support;

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::converse::{ConverseError, ConverseOutput};
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, ConverseStreamOutput, Message};
use aws_sdk_bedrockruntime::{Client, Config};
use support::component;
use tollgate_host::TenantId;
use tollgate_host::config::Config as TollgateConfig;
use tollgate_host::gateway::{Gateway, app};
use tollgate_host::sdk::{AsTenant, InProcess};

const SONNET: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

fn config() -> TollgateConfig {
    let policy = component("budget-guard").display().to_string();
    let tenant = |id: &str, budget: &str, extra: &str, config: &str| {
        format!(
            "[tenants.{id}]\nbudget-usd = \"{budget}\"\npolicy = {policy:?}\ndeadline-ms = 200\n{extra}\n\
             [tenants.{id}.policy-config]\n{config}\n\n"
        )
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplain-http = true\n\n[upstream]\nkind = \"mock\"\n\n[log]\ninvocations = \"\"\n\n\
         [ledger]\nstore = \"memory\"\n\n[engine]\ncache-dir = {:?}\n\n{}{}{}{}",
        std::env::temp_dir().join("tollgate-test-cache").display().to_string(),
        tenant("acme", "100", "", ""),
        tenant("globex", "100", "", "downgrade-at-percent = 0"),
        tenant("initech", "100", "rpm = 1", ""),
        tenant("umbrella", "0.00001", "", ""),
    );
    TollgateConfig::parse(&text, "sdk test").expect("config")
}

fn client(gateway: &Gateway, tenant: &str) -> Client {
    let conf = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"))
        // Each refusal is seen once; the SDK's own retries are tested elsewhere.
        .retry_config(aws_sdk_bedrockruntime::config::retry::RetryConfig::disabled())
        .http_client(InProcess::new(gateway.clone(), TenantId::new(tenant).expect("id")).into_shared())
        .build();
    Client::from_conf(conf)
}

fn message() -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("Say something about budgets.".into()))
        .build()
        .expect("message")
}

/// One Converse call of the test's message, as a service would make it.
async fn ask(client: &Client) -> Result<ConverseOutput, ConverseError> {
    client
        .converse()
        .model_id(SONNET)
        .messages(message())
        .send()
        .await
        .map_err(|e| e.into_service_error())
}

fn spent(gateway: &Gateway, tenant: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let state = gateway
        .accounting()
        .ledger()
        .snapshot(&TenantId::new(tenant).expect("id"), now)
        .expect("snapshot");
    assert_eq!(state.open_reservations, 0, "{tenant}: every hold settled or released");
    state.spent.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_sdk_client_is_admitted_downgraded_throttled_and_rejected_in_process() {
    let assembled = app::assemble(&config()).await.expect("assemble");
    let gateway = assembled.gateway.clone();
    let mock = assembled.mock.expect("the built-in mock");

    // Admitted: the call reaches the upstream with tollgate's metadata and is charged.
    let acme = client(&gateway, "acme");
    let out = ask(&acme).await.expect("admitted");
    let usage = out.usage().expect("usage");
    assert!(usage.output_tokens() > 0);
    let sent = mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].model_id, SONNET);
    let metadata = sent[0].request_metadata().expect("requestMetadata");
    assert_eq!(metadata["tollgate-tenant"], "acme");
    assert_eq!(metadata["tollgate-decision"], "admit");
    // What was reserved is what the upstream may generate.
    assert!(sent[0].body.as_ref().expect("body")["inferenceConfig"]["maxTokens"].is_u64());
    assert!(spent(&gateway, "acme") > 0);

    // Streams work through the same path, and are charged too.
    let before = spent(&gateway, "acme");
    let mut stream = acme
        .converse_stream()
        .model_id(SONNET)
        .messages(message())
        .send()
        .await
        .expect("stream admitted")
        .stream;
    let mut saw_metadata = false;
    while let Some(event) = stream.recv().await.expect("event") {
        if let ConverseStreamOutput::Metadata(m) = event {
            saw_metadata = m.usage().is_some_and(|u| u.output_tokens() > 0);
        }
    }
    assert!(saw_metadata, "the final metadata event carries the usage");
    assert!(spent(&gateway, "acme") > before);

    // Downgraded: the policy's cheaper model is what the upstream serves.
    mock.clear_requests();
    let globex = client(&gateway, "globex");
    ask(&globex).await.expect("downgraded");
    let sent = mock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].model_id, HAIKU, "downgraded one step down the chain");
    assert_eq!(
        sent[0].request_metadata().expect("metadata")["tollgate-decision"],
        "downgrade"
    );

    // Throttled: the SDK's own ThrottlingException, nothing forwarded or charged.
    // One request a minute: of three calls in a row, one is refused even
    // when they straddle a minute's boundary.
    let initech = client(&gateway, "initech");
    ask(&initech).await.expect("first in the minute");
    let mut charged = spent(&gateway, "initech");
    mock.clear_requests();
    let mut refused = None;
    for _ in 0..2 {
        match ask(&initech).await {
            Ok(_) => {
                charged = spent(&gateway, "initech");
                mock.clear_requests();
            }
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    let err = refused.expect("a second call in the same minute is refused");
    assert!(err.is_throttling_exception(), "{err:?}");
    assert!(mock.requests().is_empty());
    assert_eq!(spent(&gateway, "initech"), charged);

    // Rejected: the budget is too small for the worst case.
    let umbrella = client(&gateway, "umbrella");
    let err = ask(&umbrella).await.expect_err("over budget");
    assert_eq!(err.code(), Some("ServiceQuotaExceededException"), "{err:?}");
    assert!(format!("{err:?}").contains("umbrella"), "{err:?}");
    assert!(mock.requests().is_empty());
    assert_eq!(spent(&gateway, "umbrella"), 0);

    // The tenant is the service's choice per call too: AsTenant overrides the client's.
    mock.clear_requests();
    acme.converse()
        .model_id(SONNET)
        .messages(message())
        .customize()
        .interceptor(AsTenant::new(TenantId::new("globex").expect("id")))
        .send()
        .await
        .expect("as globex");
    let sent = mock.requests();
    assert_eq!(
        sent[0].request_metadata().expect("metadata")["tollgate-tenant"],
        "globex"
    );
    assert!(
        sent[0].header("x-tollgate-in-process-tenant").is_none(),
        "the tenant header stays in process"
    );

    gateway.idle().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_drops_the_call_still_pays_for_what_the_upstream_ran() {
    let mut config = config();
    config.upstream.mock.latency_ms = 500;
    let assembled = app::assemble(&config).await.expect("assemble");
    let gateway = assembled.gateway.clone();
    let mock = assembled.mock.expect("the built-in mock");

    // The service's own timeout drops the SDK future mid-call.
    let acme = client(&gateway, "acme");
    let call = acme.converse().model_id(SONNET).messages(message()).send();
    let dropped = tokio::time::timeout(std::time::Duration::from_millis(100), call).await;
    assert!(dropped.is_err(), "the call was dropped before the upstream answered");

    // The call finishes without its caller: settled from the real usage.
    gateway.idle().await;
    assert_eq!(gateway.in_flight(), 0);
    assert_eq!(mock.requests().len(), 1);
    assert!(spent(&gateway, "acme") > 0, "the call the upstream ran is charged");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlives_its_hold_is_still_charged_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config();
    config.upstream.mock.latency_ms = 1_000;
    config.ledger.reservation_ttl_ms = 200;
    config.log.invocations = dir.path().join("invocations.jsonl");
    // tollgate refuses to start like this, and says what to set.
    let err = config
        .validate()
        .expect_err("a TTL shorter than the longest call")
        .to_string();
    assert!(
        err.contains("ledger.reservation-ttl-ms") && err.contains("raise reservation-ttl-ms to at least"),
        "{err}"
    );

    // Forced anyway (a stalled host has the same effect): the hold expires mid-call.
    let assembled = app::assemble(&config).await.expect("assemble");
    let gateway = assembled.gateway.clone();
    let out = ask(&client(&gateway, "acme"))
        .await
        .expect("served after the hold expired");
    assert!(out.usage().is_some_and(|u| u.output_tokens() > 0));
    gateway.idle().await;

    let records =
        tollgate_host::gateway::invocation_log::InvocationLog::read_all(&config.log.invocations).expect("log");
    assert_eq!(records.len(), 1, "one record");
    let record = &records[0].tollgate;
    assert!(record.hold_expired, "{record:?}");
    assert_eq!(record.charged_from, "usage");
    assert!(record.cost_nano_usd > 0);
    // Charged from its real usage, once, and nothing is left held.
    assert_eq!(spent(&gateway, "acme"), record.cost_nano_usd);
    assert_eq!(gateway.in_flight(), 0);
    // And the log reprices to the ledger, to the nano-dollar.
    let catalog = app::price_book(&config).expect("prices");
    let reconciliation = tollgate_host::gateway::reconcile::reconcile(&catalog, &records);
    assert!(reconciliation.is_exact(), "{:?}", reconciliation.mismatches);
    assert_eq!(reconciliation.tenants["acme"].recomputed, spent(&gateway, "acme"));
}

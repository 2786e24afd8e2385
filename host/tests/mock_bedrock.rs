//! The mock Bedrock, driven by the real AWS SDK client over loopback HTTP.

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::{Config, Region};
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, ConverseStreamOutput, InferenceConfiguration, Message, StopReason,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_host::upstream::mock::{Fault, Faults, MockBedrock, MockSettings, Operation};

const MODEL: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const PROFILE_ARN: &str = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4";
const PROMPT: &str = "Summarise the quarterly cost report for the platform team, please.";

fn client(mock: &MockBedrock) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let config = Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::from_keys(
            "AKIDTOLLGATETEST",
            "test-secret",
            None,
        ))
        .endpoint_url(mock.url())
        // Each injected fault must reach the test, not be retried away.
        .retry_config(RetryConfig::disabled())
        .http_client(http)
        .build();
    Client::from_conf(config)
}

fn user_message(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .expect("role and content are set")
}

fn tokens(chars: usize) -> i32 {
    chars.div_ceil(4) as i32
}

async fn converse_text(client: &Client, model: &str) -> String {
    let out = client
        .converse()
        .model_id(model)
        .messages(user_message(PROMPT))
        .send()
        .await
        .expect("converse succeeds");
    match out.output() {
        Some(ConverseOutput::Message(m)) => m.content()[0].as_text().expect("a text block").clone(),
        other => panic!("unexpected output {other:?}"),
    }
}

#[tokio::test]
async fn converse_returns_a_deterministic_reply_with_usage() {
    let mock = MockBedrock::start(MockSettings::default()).await.unwrap();
    let client = client(&mock);

    let out = client
        .converse()
        .model_id(PROFILE_ARN)
        .messages(user_message(PROMPT))
        .request_metadata("tenant", "acme")
        .request_metadata("use_case", "reports")
        .send()
        .await
        .expect("converse succeeds");

    let Some(ConverseOutput::Message(message)) = out.output() else {
        panic!("no message in {out:?}");
    };
    assert_eq!(message.role(), &ConversationRole::Assistant);
    let text = message.content()[0].as_text().unwrap();
    assert!(
        text.starts_with(&format!("Mock reply from {PROFILE_ARN}: you wrote 10 words")),
        "{text}"
    );
    assert_eq!(out.stop_reason(), &StopReason::EndTurn);
    let usage = out.usage().unwrap();
    assert_eq!(usage.input_tokens(), tokens(PROMPT.chars().count()));
    assert_eq!(usage.output_tokens(), tokens(text.chars().count()));
    assert_eq!(usage.total_tokens(), usage.input_tokens() + usage.output_tokens());
    assert!(out.metrics().is_some());

    // The same input gives the same reply.
    assert_eq!(&converse_text(&client, PROFILE_ARN).await, text);

    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.operation, Operation::Converse);
    assert_eq!(first.model_id, PROFILE_ARN);
    // The ARN's ':' and '/' travel percent-encoded and come back decoded.
    assert!(first.path.starts_with("/model/arn%3Aaws%3Abedrock"), "{}", first.path);
    assert!(first.path.contains("%2Fa1b2c3d4/converse"), "{}", first.path);
    assert!(first.header("authorization").unwrap().starts_with("AWS4-HMAC-SHA256"));
    assert!(first.header("x-amz-date").is_some());
    let metadata = first.request_metadata().unwrap();
    assert_eq!(metadata["tenant"], "acme");
    assert_eq!(metadata["use_case"], "reports");
    let body = first.body.as_ref().unwrap();
    assert_eq!(body["messages"][0]["content"][0]["text"], PROMPT);
    assert_eq!(first.fault, Fault::None);

    mock.shutdown().await;
}

#[tokio::test]
async fn converse_respects_max_tokens() {
    let mock = MockBedrock::start(MockSettings::default()).await.unwrap();
    let out = client(&mock)
        .converse()
        .model_id(MODEL)
        .messages(user_message(PROMPT))
        .inference_config(InferenceConfiguration::builder().max_tokens(5).build())
        .send()
        .await
        .unwrap();
    assert_eq!(out.stop_reason(), &StopReason::MaxTokens);
    assert_eq!(out.usage().unwrap().output_tokens(), 5);
    let Some(ConverseOutput::Message(message)) = out.output() else {
        panic!("no message");
    };
    assert_eq!(message.content()[0].as_text().unwrap().chars().count(), 20);
    assert_eq!(
        mock.requests()[0].body.as_ref().unwrap()["inferenceConfig"]["maxTokens"],
        5
    );
}

#[tokio::test]
async fn converse_stream_delivers_every_event_in_order() {
    let mock = MockBedrock::start(MockSettings::default()).await.unwrap();
    let client = client(&mock);
    let expected_text = converse_text(&client, MODEL).await;

    let mut out = client
        .converse_stream()
        .model_id(MODEL)
        .messages(user_message(PROMPT))
        .request_metadata("tenant", "acme")
        .send()
        .await
        .expect("stream opens");

    let mut kinds = Vec::new();
    let mut text = String::new();
    let mut usage = None;
    while let Some(event) = out.stream.recv().await.expect("no stream error") {
        match &event {
            ConverseStreamOutput::MessageStart(e) => {
                assert_eq!(e.role(), &ConversationRole::Assistant);
                kinds.push("messageStart");
            }
            ConverseStreamOutput::ContentBlockDelta(e) => {
                assert_eq!(e.content_block_index(), 0);
                text.push_str(e.delta().unwrap().as_text().unwrap());
                kinds.push("contentBlockDelta");
            }
            ConverseStreamOutput::ContentBlockStop(e) => {
                assert_eq!(e.content_block_index(), 0);
                kinds.push("contentBlockStop");
            }
            ConverseStreamOutput::MessageStop(e) => {
                assert_eq!(e.stop_reason(), &StopReason::EndTurn);
                kinds.push("messageStop");
            }
            ConverseStreamOutput::Metadata(e) => {
                usage = e.usage().cloned();
                assert!(e.metrics().is_some());
                kinds.push("metadata");
            }
            other => panic!("unexpected event {other:?}"),
        }
    }

    let deltas = kinds.iter().filter(|k| **k == "contentBlockDelta").count();
    assert!(deltas >= 3, "the reply arrives in several deltas: {kinds:?}");
    let mut expected_kinds = vec!["messageStart"];
    expected_kinds.extend(std::iter::repeat_n("contentBlockDelta", deltas));
    expected_kinds.extend(["contentBlockStop", "messageStop", "metadata"]);
    assert_eq!(kinds, expected_kinds);
    assert_eq!(text, expected_text);
    let usage = usage.expect("metadata carries usage");
    assert_eq!(usage.input_tokens(), tokens(PROMPT.chars().count()));
    assert_eq!(usage.output_tokens(), tokens(expected_text.chars().count()));
    assert_eq!(usage.total_tokens(), usage.input_tokens() + usage.output_tokens());

    let requests = mock.requests();
    let stream_request = &requests[1];
    assert_eq!(stream_request.operation, Operation::ConverseStream);
    assert_eq!(stream_request.model_id, MODEL);
    assert!(
        stream_request.path.ends_with("v1%3A0/converse-stream"),
        "{}",
        stream_request.path
    );
    assert_eq!(stream_request.request_metadata().unwrap()["tenant"], "acme");
}

#[tokio::test]
async fn injected_http_errors_surface_as_sdk_exceptions() {
    let mock = MockBedrock::start(MockSettings {
        faults: Faults::Sequence(vec![Fault::Throttle, Fault::InternalError, Fault::ServiceUnavailable]),
        ..MockSettings::default()
    })
    .await
    .unwrap();
    let client = client(&mock);
    let call = || client.converse().model_id(MODEL).messages(user_message(PROMPT)).send();

    let throttled = call().await.unwrap_err().into_service_error();
    assert!(throttled.is_throttling_exception(), "{throttled:?}");
    let internal = call().await.unwrap_err().into_service_error();
    assert!(internal.is_internal_server_exception(), "{internal:?}");
    let unavailable = call().await.unwrap_err().into_service_error();
    assert!(unavailable.is_service_unavailable_exception(), "{unavailable:?}");
    // The sequence is used up: calls succeed again.
    call().await.expect("fourth call succeeds");

    // A stream can be throttled before it starts, too.
    mock.set_faults(Faults::Sequence(vec![Fault::Throttle]));
    let err = client
        .converse_stream()
        .model_id(MODEL)
        .messages(user_message(PROMPT))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_throttling_exception(), "{err:?}");

    let faults: Vec<Fault> = mock.requests().iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            Fault::Throttle,
            Fault::InternalError,
            Fault::ServiceUnavailable,
            Fault::None,
            Fault::Throttle
        ]
    );
}

#[tokio::test]
async fn a_throttling_rate_of_one_throttles_every_call() {
    let mock = MockBedrock::start(MockSettings {
        faults: Faults::Rate {
            throttle: 1.0,
            server_error: 0.0,
            mid_stream: 0.0,
        },
        seed: 7,
        ..MockSettings::default()
    })
    .await
    .unwrap();
    let client = client(&mock);
    for _ in 0..3 {
        let err = client
            .converse()
            .model_id(MODEL)
            .messages(user_message(PROMPT))
            .send()
            .await
            .unwrap_err();
        assert!(err.into_service_error().is_throttling_exception());
    }
}

#[tokio::test]
async fn a_mid_stream_error_follows_some_deltas() {
    let mock = MockBedrock::start(MockSettings {
        faults: Faults::Sequence(vec![Fault::MidStream]),
        ..MockSettings::default()
    })
    .await
    .unwrap();
    let mut out = client(&mock)
        .converse_stream()
        .model_id(MODEL)
        .messages(user_message(PROMPT))
        .send()
        .await
        .expect("the stream opens before it fails");

    let mut deltas = 0;
    let error = loop {
        match out.stream.recv().await {
            Ok(Some(ConverseStreamOutput::MessageStart(_))) => assert_eq!(deltas, 0),
            Ok(Some(ConverseStreamOutput::ContentBlockDelta(_))) => deltas += 1,
            Ok(Some(other)) => panic!("no event other than deltas before the failure: {other:?}"),
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert!(deltas >= 1);
    match error.into_service_error() {
        ConverseStreamOutputError::ModelStreamErrorException(e) => {
            assert!(e.message().unwrap_or_default().contains("mid-response"));
        }
        other => panic!("expected modelStreamErrorException, got {other:?}"),
    }
    assert_eq!(mock.requests()[0].fault, Fault::MidStream);
}

/// Sends a raw HTTP/1.1 request and returns the whole response as text.
async fn raw_post(mock: &MockBedrock, path: &str, body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn malformed_requests_get_bedrock_shaped_validation_errors() {
    let mock = MockBedrock::start(MockSettings::default()).await.unwrap();
    for body in [
        "{not json",
        "[]",
        r#"{"messages": 3}"#,
        r#"{"messages": [], "inferenceConfig": {"maxTokens": 0}}"#,
    ] {
        for op in ["converse", "converse-stream"] {
            let response = raw_post(&mock, &format!("/model/m/{op}"), body).await;
            assert!(response.starts_with("HTTP/1.1 400"), "{body}: {response}");
            assert!(
                response
                    .to_ascii_lowercase()
                    .contains("x-amzn-errortype: validationexception")
            );
            assert!(
                response.contains(r#"{"message":"Malformed input request"#),
                "{response}"
            );
        }
    }
    let unknown = raw_post(&mock, "/model/m/invoke-something", "{}").await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");

    // Bad calls are recorded but draw no fault; the mock keeps serving.
    assert_eq!(mock.requests().len(), 8);
    assert!(mock.requests()[0].body.is_none());
    let text = converse_text(&client(&mock), MODEL).await;
    assert!(text.starts_with("Mock reply from"));
}

#[tokio::test]
async fn configured_latency_shows_in_the_reported_metrics() {
    let mock = MockBedrock::start(MockSettings {
        latency_ms: 40,
        stream_event_interval_ms: 2,
        ..MockSettings::default()
    })
    .await
    .unwrap();
    let client = client(&mock);
    let started = std::time::Instant::now();
    let out = client
        .converse()
        .model_id(MODEL)
        .messages(user_message(PROMPT))
        .send()
        .await
        .unwrap();
    assert!(started.elapsed().as_millis() >= 40);
    assert!(out.metrics().unwrap().latency_ms() >= 40);

    let mut stream = client
        .converse_stream()
        .model_id(MODEL)
        .messages(user_message(PROMPT))
        .inference_config(InferenceConfiguration::builder().max_tokens(4).build())
        .send()
        .await
        .unwrap()
        .stream;
    let mut stop_reason = None;
    let mut latency_ms = None;
    while let Some(event) = stream.recv().await.unwrap() {
        match event {
            ConverseStreamOutput::MessageStop(e) => stop_reason = Some(e.stop_reason().clone()),
            ConverseStreamOutput::Metadata(e) => latency_ms = e.metrics().map(|m| m.latency_ms()),
            _ => {}
        }
    }
    assert_eq!(stop_reason, Some(StopReason::MaxTokens));
    assert!(latency_ms.unwrap() >= 40);
}

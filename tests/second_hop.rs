//! The second hop, as real Bedrock sees it. Its SigV4 signature, recomputed
//! from the request as it arrived, with the credentials of the AWS chain.
//! Over TLS: a private CA trusted through `ca-bundle`, an untrusted
//! certificate, and an endpoint that accepts TCP and then stalls the
//! handshake. A call that never reached the upstream is released, never
//! charged; an answer past the size limit, or one whose usage cannot be
//! read, is charged its hold. Through the real `tollgate serve` and the AWS
//! SDK.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, ConverseStreamOutput, Message};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use support::gateway::{
    NOVA_MICRO, Options, TenantSpec, TestGateway, UPSTREAM_ACCESS_KEY, UPSTREAM_SECRET, the_restored_charge, timed_call,
};
use support::upstream::{self, read_request};
use tollgate_host::gateway::listener::{Bound, Edges, Listen, install_crypto_provider};
use tollgate_host::upstream::mock::RecordedRequest;
use tollgate_host::upstream::mock::{self, MockSettings};

/// The mock Bedrock over HTTPS on loopback, with a fresh self-signed
/// certificate; returns its URL and the certificate's PEM file.
async fn tls_mock(dir: &std::path::Path) -> (String, std::path::PathBuf, tokio::task::JoinHandle<()>) {
    install_crypto_provider();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    let (cert, key) = (dir.join("upstream-cert.pem"), dir.join("upstream-key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let bound = Bound::bind(&Listen::Https {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        cert: cert.clone(),
        key,
    })
    .await
    .expect("bind the TLS mock");
    let url = format!("https://{}", bound.local_addr().expect("addr"));
    let serving = tokio::spawn(async move {
        let _ = bound
            .serve(
                mock::router(MockSettings::default()),
                std::future::pending(),
                Duration::from_secs(1),
                Edges::default(),
            )
            .await;
    });
    (url, cert, serving)
}

/// `tollgate serve` with one tenant on allow-all, in front of the upstream at
/// `url`; `upstream_extra` replaces `max-attempts = 1` when not empty.
async fn gateway_before(url: String, upstream_extra: &'static str) -> (TestGateway, TenantSpec) {
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        upstream_url: Some(url),
        upstream_extra,
        ..Options::default()
    })
    .await;
    (gw, acme)
}

/// One Converse call and one ConverseStream read to its end; returns the
/// stream's metadata events.
async fn converse_then_stream(client: &aws_sdk_bedrockruntime::Client) -> usize {
    timed_call(client).await.expect("converse");
    let hello = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("Say hello".into()))
        .build()
        .expect("message");
    let mut stream = client
        .converse_stream()
        .model_id(NOVA_MICRO)
        .messages(hello)
        .send()
        .await
        .expect("converse-stream");
    let mut metadata = 0;
    while let Some(event) = stream.stream.recv().await.expect("stream event") {
        if let ConverseStreamOutput::Metadata(_) = event {
            metadata += 1;
        }
    }
    metadata
}

/// The signature a SigV4 verifier computes for `request` as it arrived: the
/// headers it says it signed, its path as sent, its body's hash, its date.
fn expected_signature(request: &RecordedRequest, authorization: &str) -> String {
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header"))
    };
    let signed: Vec<&str> = authorization
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("SignedHeaders")
        .split(';')
        .collect();
    assert!(
        signed.contains(&"host") && signed.contains(&"x-amz-date"),
        "{authorization}"
    );
    let when = chrono::NaiveDateTime::parse_from_str(header("x-amz-date"), "%Y%m%dT%H%M%SZ").expect("x-amz-date");
    let identity =
        aws_credential_types::Credentials::new(UPSTREAM_ACCESS_KEY, UPSTREAM_SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock")
        .time(std::time::UNIX_EPOCH + Duration::from_secs(when.and_utc().timestamp() as u64))
        .settings(SigningSettings::default())
        .build()
        .expect("params")
        .into();
    let uri = format!("http://{}{}", header("host"), request.path);
    let headers = signed.iter().map(|name| (*name, header(name)));
    let signable = SignableRequest::new(
        &request.method,
        &uri,
        headers,
        SignableBody::Precomputed(request.body_sha256.clone()),
    )
    .expect("signable");
    sign(signable, &params).expect("sign").into_parts().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_reach_the_upstream_signed_with_sigv4_from_the_credential_chain() {
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        upstream_sigv4: true,
        ..Options::default()
    })
    .await;
    assert_eq!(converse_then_stream(&gw.sigv4_client(&acme)).await, 1);

    let requests = gw.mock.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        let authorization = request
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
            .expect("the call is signed");
        let scope = format!("Credential={UPSTREAM_ACCESS_KEY}/");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 ") && authorization.contains(&scope),
            "{authorization}"
        );
        assert!(
            authorization.contains("/us-east-1/bedrock/aws4_request"),
            "{authorization}"
        );
        let sent = authorization.rsplit("Signature=").next().expect("signature");
        assert_eq!(
            sent,
            expected_signature(request, &authorization),
            "the signature does not verify for {}",
            request.path
        );
    }
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_in_ca_bundle_is_trusted_for_converse_and_streams() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let (url, cert, serving) = tls_mock(scratch.path()).await;
    let extra: &'static str =
        Box::leak(format!("max-attempts = 1\nca-bundle = {:?}", cert.display().to_string()).into_boxed_str());
    let (gw, acme) = gateway_before(url, extra).await;
    let metadata = converse_then_stream(&gw.sigv4_client(&acme)).await;
    assert_eq!(metadata, 1, "the stream ran to its metadata event");

    let records = gw.wait_for_records(2).await;
    for record in &records {
        assert_eq!(record.tollgate.status, 200, "{record:?}");
        assert_eq!(record.tollgate.charged_from, "usage", "{record:?}");
    }
    let spent: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    assert!(spent > 0);
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], spent);
    gw.reconcile().await;
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_and_the_call_released() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let (url, _cert, serving) = tls_mock(scratch.path()).await;
    let (gw, acme) = gateway_before(url, "").await;
    let refused = timed_call(&gw.sigv4_client(&acme))
        .await
        .expect_err("untrusted upstream");
    assert!(refused.0 >= 500, "{refused:?}");
    let records = gw.wait_for_records(1).await;
    assert_eq!(records[0].tollgate.charged_from, "released", "{:?}", records[0]);
    assert_eq!(records[0].tollgate.cost_nano_usd, 0);
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], 0);
    gw.reconcile().await;
    serving.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_whose_tls_handshake_stalls_is_unreachable_released_and_retried() {
    // It accepts TCP and then says nothing: the TLS handshake never completes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let silent = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Held open, never read or written.
            let _ = accepted_tx.send(stream);
        }
    });
    let (gw, acme) = gateway_before(
        format!("https://127.0.0.1:{port}"),
        "max-attempts = 2\ninitial-backoff-ms = 1\nconnect-timeout-ms = 200\ntimeout-ms = 30000",
    )
    .await;
    let refused = timed_call(&gw.sigv4_client(&acme)).await.expect_err("no handshake");
    assert!(refused.0 >= 500, "{refused:?}");

    // Both attempts reached the socket: a stalled handshake proves the request
    // unsent, so it is retried, and then released rather than charged.
    for attempt in 1..=2 {
        tokio::time::timeout(Duration::from_secs(10), accepted.recv())
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt} never connected"))
            .expect("acceptor runs");
    }
    let records = gw.wait_for_records(1).await;
    assert_eq!(records.len(), 1);
    let record = &records[0].tollgate;
    assert_eq!(record.charged_from, "released", "{record:?}");
    assert_eq!(record.cost_nano_usd, 0);
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], 0);
    assert_eq!(gw.healthz().await, 200, "the gateway still serves");
    gw.reconcile().await;
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_cut_at_the_limit_and_the_call_charged_its_hold() {
    // An upstream that answers 200 and then sends 64 MiB of JSON whitespace.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (sent_tx, sent) = tokio::sync::oneshot::channel::<usize>();
    let endless = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_request(&mut stream).await;
        let total = 64 * 1024 * 1024;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {total}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![b' '; 1024 * 1024];
        let mut written = 0;
        while written < total && stream.write_all(&chunk).await.is_ok() {
            written += chunk.len();
        }
        let _ = sent_tx.send(written);
    });
    let (gw, acme) = gateway_before(
        format!("http://127.0.0.1:{port}"),
        "max-attempts = 3\ninitial-backoff-ms = 1",
    )
    .await;
    let failed = timed_call(&gw.sigv4_client(&acme)).await.expect_err("cut off");
    assert!(failed.0 >= 500, "{failed:?}");
    // The gateway hung up well before the end: it read at most its limit.
    let written = tokio::time::timeout(Duration::from_secs(30), sent)
        .await
        .expect("the upstream finished writing")
        .expect("written");
    assert!(written < 64 * 1024 * 1024, "the gateway read all {written} bytes");

    // The call may have run: charged its hold, once, and not sent again.
    let records = gw.wait_for_records(1).await;
    let record = &records[0].tollgate;
    assert_eq!(record.charged_from, "reservation", "{record:?}");
    assert!(record.reason.contains("longer than"), "{record:?}");
    assert!(record.cost_nano_usd > 0);
    assert_eq!(record.cost_nano_usd, record.reserved_nano_usd);
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], record.cost_nano_usd);
    assert_eq!(gw.healthz().await, 200, "the gateway still serves");
    gw.reconcile().await;
    endless.await.expect("the upstream task ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_at_the_upstream_when_the_gateway_is_killed_is_charged_its_hold_at_restart() {
    killed_at_the_upstream("").await;
}

/// As above, with the ledger acknowledging after the log's write, where the
/// call's own task appended its hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_at_the_upstream_when_the_gateway_is_killed_is_charged_its_hold_at_restart_on_the_log() {
    killed_at_the_upstream("commit = \"write\"\ncheckpoint-ms = 60000").await;
}

async fn killed_at_the_upstream(ledger_extra: &str) {
    let (url, arrived, silent) = upstream::silent().await;
    let acme = TenantSpec::new("acme", "allow-all");
    let mut gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        upstream_url: Some(url),
        ledger_extra: ledger_extra.to_owned(),
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme);
    let caller = tokio::spawn(async move { timed_call(&client).await });
    arrived.await.expect("the call reached the upstream");

    // SIGKILL while Bedrock may be running the call: no settle, no record.
    gw.restart().await;
    let failed = caller.await.expect("join").expect_err("the caller lost its call");
    assert_eq!(failed.0, 0, "no answer was sent: {failed:?}");
    silent.await.expect("the upstream saw the gateway go");

    // At restart, before any call, the hold was charged and logged as such.
    let records = gw.wait_for_records(1).await;
    let charged = the_restored_charge(&records);
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], charged);
    gw.reconcile().await;
    let stderr = std::fs::read_to_string(gw.dir().join("stderr.log")).expect("stderr");
    assert!(stderr.contains("charged the hold of a call in flight"), "{stderr}");

    // Charged once: a second restart finds nothing open and charges nothing.
    gw.restart().await;
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], charged);
    assert_eq!(gw.wait_for_records(1).await.len(), 1);
    assert_eq!(gw.healthz().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_whose_usage_cannot_be_read_is_charged_its_hold_once() {
    // An upstream that answers each call 200 with a body tollgate cannot bill
    // by: no usage, a usage of the wrong shape, and JSON cut short.
    let bodies = [
        r#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn"}"#,
        r#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":"many","outputTokens":2}}"#,
        r#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"usage":{"inputTok"#,
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answering = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for body in bodies {
            let (mut stream, _) = listener.accept().await.expect("accept");
            read_request(&mut stream).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-amzn-requestid: unbillable\r\n\
                 connection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.expect("head");
            stream.write_all(body.as_bytes()).await.expect("body");
        }
    });
    let (gw, acme) = gateway_before(format!("http://127.0.0.1:{port}"), "").await;
    let client = gw.sigv4_client(&acme);
    for _ in bodies {
        // The caller gets Bedrock's answer as it came, whatever its SDK makes of it.
        if let Err((status, message)) = timed_call(&client).await {
            assert!(status < 500, "tollgate answered {status}: {message}");
        }
    }
    answering.await.expect("the upstream answered every call");

    // Each call reached Bedrock and may be billed: its hold is the charge,
    // once, and the record says why.
    let records = gw.wait_for_records(bodies.len()).await;
    let mut charged = 0;
    for record in &records {
        let record = &record.tollgate;
        assert_eq!(record.status, 200, "{record:?}");
        assert_eq!(record.charged_from, "reservation", "{record:?}");
        assert!(record.cost_nano_usd > 0);
        assert_eq!(record.cost_nano_usd, record.reserved_nano_usd);
        assert!(record.billing_note.is_some(), "{record:?}");
        charged += record.cost_nano_usd;
    }
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], charged);
    assert_eq!(gw.healthz().await, 200, "the gateway still serves");
    gw.reconcile().await;
}

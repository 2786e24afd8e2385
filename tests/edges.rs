//! The listener's edges under hostile clients: idle sockets, slowloris
//! heads, slow bodies, a connection flood and an overload, and on the other
//! side an upstream that is down. Each is closed or refused within its limit,
//! nothing is charged for it, and a good client (the real AWS SDK) keeps
//! being served. Through the real `tollgate serve`.

mod support;

use std::time::{Duration, Instant};

use support::gateway::{Options, TenantSpec, TestGateway, timed_call};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_host::upstream::mock::MockSettings;

const PATH: &str = "/model/amazon.nova-micro-v1%3A0/converse";

/// Reads until the gateway closes the connection; returns what it sent and
/// when it closed. `limit` only bounds a broken gateway.
async fn until_closed(mut stream: TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection was still open after {limit:?}"),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), started.elapsed())
}

async fn connect(addr: &str) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slowloris_and_slow_body_connections_are_closed_and_a_good_client_is_served() {
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        server_extra: "header-read-timeout-ms = 2000\nbody-read-timeout-ms = 2000",
        ..Options::default()
    })
    .await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let limit = Duration::from_secs(20);
    let key = acme.bearer_key();

    let mut idle = Vec::new();
    for _ in 0..2000 {
        let stream = connect(&addr).await;
        idle.push(tokio::spawn(until_closed(stream, limit)));
    }
    let mut slowloris = Vec::new();
    for i in 0..200 {
        let mut stream = connect(&addr).await;
        // A head that never ends: one more header, then nothing.
        let head = format!("POST {PATH} HTTP/1.1\r\nhost: {addr}\r\nx-slow-{i}: 1\r\n");
        stream.write_all(head.as_bytes()).await.expect("send");
        slowloris.push(tokio::spawn(until_closed(stream, limit)));
    }
    let mut slow_body = Vec::new();
    for _ in 0..200 {
        let mut stream = connect(&addr).await;
        // An authenticated head announcing 1000 bytes, and 12 of them.
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"messages\":"
        );
        stream.write_all(head.as_bytes()).await.expect("send");
        slow_body.push(tokio::spawn(until_closed(stream, limit)));
    }

    // A good client, meanwhile.
    let client = gw.sigv4_client(&acme);
    for _ in 0..20 {
        timed_call(&client).await.expect("the good client is served");
    }

    let timeout = Duration::from_secs(2);
    for (name, tasks) in [("idle", idle), ("slowloris", slowloris)] {
        for task in tasks {
            let (sent, closed_after) = task.await.expect("task");
            assert!(
                closed_after >= timeout - Duration::from_millis(100),
                "{name}: closed early, {closed_after:?}"
            );
            // hyper answers nothing to a head that never came (or a 408 for a partial one).
            assert!(sent.is_empty() || sent.starts_with("HTTP/1.1 408"), "{name}: {sent:?}");
        }
    }
    for task in slow_body {
        let (sent, closed_after) = task.await.expect("task");
        assert!(
            closed_after >= timeout - Duration::from_millis(100),
            "slow body closed early, {closed_after:?}"
        );
        assert!(sent.starts_with("HTTP/1.1 408"), "{sent:?}");
        assert!(sent.contains("RequestTimeoutException"), "{sent}");
    }
    timed_call(&client).await.expect("still served afterwards");
    let state = gw.settled("acme").await;
    assert_eq!(gw.mock.requests().len(), 21, "only the good calls reached Bedrock");
    assert!(state["spent-nano-usd"].as_u64().expect("spent") > 0);
    assert_eq!(gw.records().len(), 21, "only the good calls were decided");
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once_and_calls_past_the_in_flight_limit_get_a_503() {
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        server_extra: "max-connections = 20\nmax-in-flight = 2",
        // Slow enough that two calls are still in flight when the third arrives.
        mock: MockSettings {
            latency_ms: 1500,
            ..MockSettings::default()
        },
        ..Options::default()
    })
    .await;
    let addr = gw.url.trim_start_matches("http://").to_owned();

    // Load shedding: three calls at once, two in flight; the third is refused at once.
    let client = gw.sigv4_client(&acme);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { timed_call(&client).await })
        })
        .collect();
    let mut served = 0;
    let mut shed = Vec::new();
    for call in calls {
        match call.await.expect("task") {
            Ok(_) => served += 1,
            Err((503, code)) => shed.push(code),
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((served, shed.len()), (2, 1), "{shed:?}");
    assert_eq!(shed[0], "ServiceUnavailableException");

    // The connection cap: 20 held open, the 21st closed as soon as it is accepted.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect(&addr).await);
    }
    let (sent, closed_after) = until_closed(connect(&addr).await, Duration::from_secs(10)).await;
    assert!(sent.is_empty(), "{sent:?}");
    assert!(closed_after < Duration::from_secs(1), "closed after {closed_after:?}");
    drop(held);
    timed_call(&client).await.expect("served once the connections are gone");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("tollgate_calls_shed_total 1\n"), "{metrics}");
    assert!(!metrics.contains("tollgate_connections_refused_total 0\n"), "{metrics}");
    gw.settled("acme").await;
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_not_ready_while_the_upstream_is_down_and_ready_once_it_answers() {
    // A port with nothing listening: the upstream is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        upstream_url: Some(format!("http://127.0.0.1:{port}")),
        ..Options::default()
    })
    .await;
    let readyz = || async {
        let response = gw
            .raw()
            .get(format!("{}/readyz", gw.admin_url))
            .send()
            .await
            .expect("readyz answers");
        (response.status().as_u16(), response.text().await.expect("text"))
    };
    let (status, text) = readyz().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("upstream") && text.contains("does not answer"), "{text}");
    // A call meanwhile is refused, charged nothing, and the process stays up.
    let refused = timed_call(&gw.sigv4_client(&acme)).await.expect_err("no upstream");
    assert!(refused.0 >= 500, "{refused:?}");
    assert_eq!(gw.settled("acme").await["spent-nano-usd"], 0);

    // The upstream comes back on the same port: ready at once, no restart.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let upstream = tokio::spawn(async move {
        axum::serve(listener, tollgate_host::upstream::mock::router(MockSettings::default()))
            .await
            .expect("mock serves");
    });
    let (status, text) = readyz().await;
    assert_eq!(status, 200, "{text}");
    timed_call(&gw.sigv4_client(&acme)).await.expect("served again");
    assert!(gw.settled("acme").await["spent-nano-usd"].as_u64().expect("spent") > 0);
    gw.reconcile().await;
    upstream.abort();
}

/// An upstream that answers one ConverseStream call with an answer far
/// longer than the sockets and buffers between it and a caller that reads
/// nothing, then one Converse call; its task ends after both. The receiver
/// hears when the stream's request arrived: its call is then in flight.
async fn long_stream_upstream() -> (String, tokio::sync::oneshot::Receiver<()>, tokio::task::JoinHandle<()>) {
    use support::upstream::read_request;
    use tollgate_host::upstream::eventstream::StreamEvent;

    const DELTAS: usize = 8_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_request(&mut stream).await;
        let _ = arrived_tx.send(());
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\nconnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).await.expect("head");
        let mut events = vec![StreamEvent::MessageStart {
            role: "assistant".into(),
        }];
        events.extend((0..DELTAS).map(|_| StreamEvent::ContentBlockDelta {
            content_block_index: 0,
            text: "word ".repeat(200),
        }));
        events.push(StreamEvent::ContentBlockStop { content_block_index: 0 });
        events.push(StreamEvent::MessageStop {
            stop_reason: "end_turn".into(),
        });
        let usage = serde_json::json!({ "usage": { "inputTokens": 12, "outputTokens": 1500, "totalTokens": 1512 } });
        let serde_json::Value::Object(fields) = usage else {
            unreachable!()
        };
        events.push(StreamEvent::Metadata { fields, latency_ms: 5 });
        for event in events {
            let frame = event.encode().expect("frame");
            // The gateway stops reading while its caller does; it may close at any point after.
            if stream.write_all(&frame).await.is_err() {
                break;
            }
        }
        drop(stream);
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_request(&mut stream).await;
        let answer = serde_json::json!({
            "output": { "message": { "role": "assistant", "content": [{ "text": "Hello" }] } },
            "stopReason": "end_turn",
            "usage": { "inputTokens": 3, "outputTokens": 1, "totalTokens": 4 },
            "metrics": { "latencyMs": 1 },
        })
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            answer.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(answer.as_bytes()).await.expect("answer");
    });
    (url, arrived, task)
}

/// Starts a ConverseStream call over a socket with a small receive buffer,
/// and reads nothing of the answer.
async fn stalled_stream_caller(gw: &TestGateway, tenant: &TenantSpec) -> TcpStream {
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let mut caller = socket.connect(addr.parse().expect("addr")).await.expect("connect");
    let body = r#"{"messages":[{"role":"user","content":[{"text":"Tell me a long story"}]}],"inferenceConfig":{"maxTokens":2000}}"#;
    let request = format!(
        "POST /model/amazon.nova-micro-v1%3A0/converse-stream HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        tenant.bearer_key(),
        body.len()
    );
    caller.write_all(request.as_bytes()).await.expect("send");
    caller
}

/// The stalled caller's call: ended anyway, charged its real usage, and
/// logged with `why`; then the caller's stream is cut, not whole, and the
/// gateway serves a good client.
async fn the_stalled_call_is_charged_and_the_gateway_serves(
    gw: &TestGateway,
    tenant: &TenantSpec,
    caller: TcpStream,
    upstream: tokio::task::JoinHandle<()>,
    why: &str,
) {
    let records = gw.wait_for_records(1).await;
    let record = &records[0].tollgate;
    assert!(record.reason.contains(why), "{record:?}");
    assert_eq!(record.charged_from, "usage", "{record:?}");
    assert!(
        record.cost_nano_usd > 0 && record.cost_nano_usd < record.reserved_nano_usd,
        "{record:?}"
    );
    let state = gw.settled(tenant.id).await;
    assert_eq!(state["spent-nano-usd"], record.cost_nano_usd);
    assert_eq!(state["reserved-nano-usd"], 0);

    // When it reads again, its stream ends without its last frames: cut, not whole.
    let (received, _) = until_closed(caller, Duration::from_secs(20)).await;
    assert!(
        received.starts_with("HTTP/1.1 200"),
        "{}",
        &received[..received.len().min(200)]
    );
    assert!(
        !received.contains("metadata"),
        "the cut stream does not end as a whole one"
    );
    assert!(!received.ends_with("0\r\n\r\n"), "the body is aborted, not ended");

    assert_eq!(gw.healthz().await, 200);
    timed_call(&gw.sigv4_client(tenant))
        .await
        .expect("a good client is served");
    upstream.await.expect("the upstream task ends");
    gw.reconcile().await;
}

/// A ConverseStream caller that keeps its connection open and stops reading
/// (a full receive window) while Bedrock streams a long answer. The gateway
/// gives up on it once a frame has waited the stream's idle bound, reads
/// the answer on to its usage, and charges that, before the call's hold
/// could expire under it. The caller's stream ends in an error, never as a
/// whole answer; the gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_caller_that_stops_reading_is_cut_and_its_call_charged_its_usage() {
    let (upstream_url, arrived, upstream) = long_stream_upstream().await;
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        upstream_url: Some(upstream_url),
        upstream_extra: "max-attempts = 1\nstream-idle-timeout-ms = 1000",
        ..Options::default()
    })
    .await;
    let caller = stalled_stream_caller(&gw, &acme).await;
    // Only then is there a call for `/admin/idle` to wait for.
    arrived.await.expect("the call reached the upstream");
    the_stalled_call_is_charged_and_the_gateway_serves(&gw, &acme, caller, upstream, "stopped reading").await;
}

/// The same caller, with the stream's idle bound far away: the listener's
/// write timeout closes its connection once a write has waited that long,
/// and the call is charged as for a caller that hung up. No connection,
/// buffer or call is held for a client that reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_at_the_write_timeout() {
    let (upstream_url, arrived, upstream) = long_stream_upstream().await;
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        upstream_url: Some(upstream_url),
        // The stream's own bound (120 s) is past /admin/idle's 30 s wait.
        upstream_extra: "max-attempts = 1",
        server_extra: "write-timeout-ms = 1000",
        ..Options::default()
    })
    .await;
    let caller = stalled_stream_caller(&gw, &acme).await;
    // Only then is there a call for `/admin/idle` to wait for.
    arrived.await.expect("the call reached the upstream");
    the_stalled_call_is_charged_and_the_gateway_serves(&gw, &acme, caller, upstream, "caller disconnected").await;
}

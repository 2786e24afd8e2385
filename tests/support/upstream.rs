//! Upstreams that misbehave on the wire, on loopback: for the fault paths
//! the mock Bedrock cannot take.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Reads one HTTP/1.1 request (head and `content-length` body) from `stream`.
pub async fn read_request(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await.expect("read the request");
        assert!(n > 0, "the gateway closed before its request was complete");
        seen.extend_from_slice(&buf[..n]);
        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("content-length"));
        if seen.len() >= end + 4 + length {
            return;
        }
    }
}

/// An upstream that takes one request, says so, and never answers; its task
/// ends when the gateway's end of the connection closes. Returns its URL.
pub async fn silent() -> (String, oneshot::Receiver<()>, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (arrived_tx, arrived) = oneshot::channel();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_request(&mut stream).await;
        let _ = arrived_tx.send(());
        let _ = stream.read(&mut [0u8; 1]).await;
    });
    (url, arrived, task)
}

/// Bedrock's answer to a Converse call: 12 tokens in, 8 out.
pub const CONVERSE_OK: (u16, &str) = (
    200,
    r#"{"output":{"message":{"role":"assistant","content":[{"text":"Hello"}]}},"stopReason":"end_turn","usage":{"inputTokens":12,"outputTokens":8,"totalTokens":20},"metrics":{"latencyMs":5}}"#,
);

/// Bedrock refusing a call for its rate: nothing ran, nothing is billed.
pub const THROTTLED: (u16, &str) = (
    429,
    r#"{"message":"Too many requests, please wait before trying again."}"#,
);

/// An upstream that takes one request, says so, and gives `reply` only once
/// `answer` is sent, then says it has answered. Later connections
/// (readiness probes) get a 404 per request, as Bedrock's root does.
/// Returns its URL.
pub async fn gated(
    reply: (u16, &'static str),
) -> (
    String,
    oneshot::Receiver<()>,
    oneshot::Sender<()>,
    oneshot::Receiver<()>,
) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (arrived_tx, arrived) = oneshot::channel();
    let (answer, answer_rx) = oneshot::channel::<()>();
    let (answered_tx, answered) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        read_request(&mut stream).await;
        let _ = arrived_tx.send(());
        let _ = answer_rx.await;
        let (status, body) = reply;
        let error_type = if status == 429 {
            "x-amzn-errortype: ThrottlingException\r\n"
        } else {
            ""
        };
        let response = format!(
            "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\n{error_type}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await.expect("answer");
        let _ = answered_tx.send(());
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    // Probes are GETs: no body follows the head.
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(not_found).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, arrived, answer, answered)
}

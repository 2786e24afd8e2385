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

//! `tollgate mock-bedrock` serves the Bedrock runtime API: a Converse call
//! over plain HTTP on loopback gets a Bedrock-shaped reply with usage, and a
//! malformed one a Bedrock-shaped 400.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn post(addr: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

#[test]
fn mock_bedrock_serves_converse_on_loopback() {
    let child = support::tollgate()
        .args(["mock-bedrock", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tollgate mock-bedrock");
    let mut server = Server(child);
    let mut first = String::new();
    let mut stdout = BufReader::new(server.0.stdout.take().expect("stdout"));
    stdout.read_line(&mut first).expect("read the endpoint line");
    let addr = first
        .trim()
        .rsplit("http://")
        .next()
        .expect("an http:// endpoint on the first line")
        .to_owned();

    let ok = post(
        &addr,
        "/model/amazon.nova-micro-v1%3A0/converse",
        r#"{"messages":[{"role":"user","content":[{"text":"Hello there, how are you today?"}]}]}"#,
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("\"inputTokens\"") && ok.contains("\"outputTokens\""),
        "{ok}"
    );

    let bad = post(&addr, "/model/amazon.nova-micro-v1%3A0/converse", "{not json");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert!(
        bad.to_ascii_lowercase()
            .contains("x-amzn-errortype: validationexception"),
        "{bad}"
    );
}

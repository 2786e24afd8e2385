//! Alerts across replicas: a tenant called through one replica shows the
//! same burn rate, forecast and level on all three, and each level reached
//! is sent to the webhook once, not once per replica.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::gateway::{Options, TenantSpec, TestGateway, call_model};
use crate::support::redis::RedisServer;

const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

/// A webhook receiver on loopback: keeps each POSTed JSON body, answers 200.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    let Some(end) = text.find("\r\n\r\n") else { continue };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    let body = &buffer[end + 4..end + 4 + length];
                    if let Ok(event) = serde_json::from_slice::<Value>(body) {
                        kept.lock().unwrap().push(event);
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
            });
        }
    });
    (url, received)
}

/// A log line without its terminal colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_shows_the_fleets_level_and_the_webhook_fires_once() {
    let server = RedisServer::start();
    let (hook, received) = receiver().await;
    let burner = TenantSpec {
        budget_usd: "0.0004",
        ..TenantSpec::new("burner", "allow-all")
    };
    let extra_toml: &'static str = Box::leak(format!("[alerts.webhooks]\nurls = [\"{hook}\"]\n").into_boxed_str());
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            TestGateway::start(Options {
                tenants: vec![burner.clone()],
                ledger_extra: format!(
                    "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"alerts\"\n",
                    server.url()
                ),
                extra_toml,
                ..Options::default()
            })
            .await,
        );
    }
    // Every call goes through replica 1, until the budget refuses one.
    let client = replicas[0].sigv4_client(&burner);
    while call_model(&client, NOVA_MICRO).await.is_ok() {}

    // The other replicas served nothing, yet show the same figures within a few refreshes.
    let deadline = Instant::now() + Duration::from_secs(15);
    let figures = |v: &Value| {
        (
            v["alert"].clone(),
            v["burn-rate-short"].clone(),
            v["forecast-spend"].clone(),
        )
    };
    let reference = loop {
        let views = [
            replicas[0].tenant_state("burner").await,
            replicas[1].tenant_state("burner").await,
            replicas[2].tenant_state("burner").await,
        ];
        if views[0]["alert"] != "green" && views.iter().all(|v| figures(v) == figures(&views[0])) {
            break views[0].clone();
        }
        assert!(Instant::now() < deadline, "the replicas never agreed: {views:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(reference["burn-rate-short"], 0, "{reference}");

    // Every replica saw the tenant reach that level, and asked to deliver it:
    // exactly one won each change.
    let deadline = Instant::now() + Duration::from_secs(10);
    let final_key = "alerts:{burner}:alert:";
    loop {
        let claims: Vec<String> = replicas
            .iter()
            .flat_map(|r| {
                std::fs::read_to_string(r.dir().join("stderr.log"))
                    .unwrap_or_default()
                    .lines()
                    .map(plain)
                    .filter(|l| l.contains("alert delivery claim") && l.contains(final_key))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut per_key: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for line in &claims {
            let key = line
                .split("key=")
                .nth(1)
                .and_then(|k| k.split_whitespace().next())
                .unwrap_or("")
                .to_owned();
            let entry = per_key.entry(key).or_default();
            entry.0 += 1;
            entry.1 += usize::from(line.contains("claimed=true"));
        }
        let level = reference["alert"].as_str().unwrap_or_default().to_owned();
        let reached = per_key.iter().find(|(key, _)| key.to_lowercase().ends_with(&level));
        if reached.is_some_and(|(_, (asked, _))| *asked == 3) {
            assert!(per_key.values().all(|(_, won)| *won == 1), "{per_key:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not every replica asked: {per_key:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each level the tenant reached was sent to the webhook once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = received.lock().unwrap().clone();
        let tenant_events: Vec<&Value> = events.iter().filter(|e| e["tenant"] == "burner").collect();
        if tenant_events.last().is_some_and(|e| e["to"] == reference["alert"]) {
            let mut per_change: BTreeMap<String, usize> = BTreeMap::new();
            for e in &tenant_events {
                *per_change.entry(e["to"].to_string()).or_default() += 1;
            }
            assert!(per_change.values().all(|n| *n == 1), "{per_change:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no webhook for the level change: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

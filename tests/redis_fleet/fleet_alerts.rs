//! Alerts across replicas: a tenant called through one replica shows the
//! same burn rate, forecast and level on all three, and each level reached
//! is sent to the webhook once, not once per replica.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::gateway::{Options, TenantSpec, TestGateway, call_model};
use crate::support::redis::RedisServer;
use crate::support::watch::until_files;

const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

/// A webhook receiver on loopback: sends each POSTed JSON body down the
/// channel, answers 200.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (sent, received) = mpsc::unbounded_channel();
    let hook = move |body: String| async move {
        if let Ok(event) = serde_json::from_str::<Value>(&body) {
            let _ = sent.send(event);
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(hook));
    tokio::spawn(async move { axum::serve(listener, app).await });
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
    let (hook, mut received) = receiver().await;
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

    // The level replica 1 reached from its own calls.
    let level = replicas[0].tenant_state("burner").await["alert"]
        .as_str()
        .expect("alert")
        .to_owned();
    assert_ne!(level, "green");

    // The other replicas served nothing, yet each reaches that level from the
    // fleet's spend and asks to deliver it; exactly one wins each level.
    let logs: Vec<PathBuf> = replicas.iter().map(|r| r.dir().join("stderr.log")).collect();
    let watched = logs.clone();
    let reached = level.clone();
    let per_key = until_files(
        logs,
        Duration::from_secs(15),
        "every replica asks to deliver the level",
        move || {
            let per_key = claims(&watched);
            let asked = per_key
                .iter()
                .find(|(key, _)| key.to_lowercase().ends_with(&format!(":{reached}")))
                .map_or(0, |(_, (asked, _))| *asked);
            (asked == 3).then_some(per_key)
        },
    )
    .await;
    assert!(per_key.values().all(|(_, won)| *won == 1), "{per_key:?}");

    // All three show the same level, burn rate and forecast. The forecast
    // projects to the period's end from the moment each view is read, so
    // views read a few ms apart may differ by that much (here 0.001 %).
    let mut views = Vec::new();
    for replica in &replicas {
        views.push(replica.tenant_state("burner").await);
    }
    let forecast = |v: &Value| v["forecast-spend"].as_u64().expect("forecast");
    for view in &views {
        assert_eq!(
            (&view["alert"], &view["burn-rate-short"]),
            (&views[0]["alert"], &views[0]["burn-rate-short"]),
            "{views:#?}"
        );
        assert!(
            forecast(view).abs_diff(forecast(&views[0])) <= forecast(&views[0]) / 100_000,
            "{views:#?}"
        );
    }
    assert_eq!(views[0]["alert"], level.as_str());
    assert_ne!(views[0]["burn-rate-short"], 0, "{:?}", views[0]);

    // Each level the tenant reached was sent to the webhook once.
    let mut per_level: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !per_level.contains_key(&level) {
        let event = tokio::time::timeout_at(deadline, received.recv())
            .await
            .expect("a webhook for the level reached")
            .expect("the receiver runs");
        if event["tenant"] == "burner" {
            *per_level
                .entry(event["to"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    while let Ok(event) = received.try_recv() {
        if event["tenant"] == "burner" {
            *per_level
                .entry(event["to"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    assert!(per_level.values().all(|n| *n == 1), "{per_level:?}");
}

/// Each replica's delivery claims, by key: (asked, won).
fn claims(logs: &[PathBuf]) -> BTreeMap<String, (usize, usize)> {
    let mut per_key: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines().map(plain).filter(|l| l.contains("alert delivery claim")) {
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
    }
    per_key
}

//! A replica started while Redis does not answer: it starts on its local
//! copy of the fleet's tenants and policies (runtime changes included),
//! refuses calls under `fail-closed` with nothing sent or charged, refuses
//! changes it could not keep, and serves as soon as Redis answers, without
//! a restart. One started while Redis hangs is not ready until Redis
//! answers. A replica whose `tollgate.toml` changed since its copy was
//! made, that has no copy, or whose copy another replica holds, is refused
//! with an error that says why.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::admin_api::{active, admin, change_settings, spent};
use crate::support::gateway::{Options, TenantSpec, TestGateway, call_model};
use crate::support::redis::RedisServer;
use crate::support::tollgate;

const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

fn options(server: &RedisServer) -> Options {
    Options {
        tenants: vec![TenantSpec::new("acme", "scripted")],
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"copy\"\ntimeout-ms = 200\n",
            server.url()
        ),
        ..Options::default()
    }
}

/// Runs `tollgate serve` on `dir`'s configuration, expecting it to exit
/// with an error (within 30 s); its standard error.
fn refused_start(dir: &Path) -> String {
    let mut child = tollgate()
        .arg("serve")
        .arg("--config")
        .arg(dir.join("tollgate.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tollgate serve");
    let mut stderr = child.stderr.take().expect("stderr");
    let (done, exited) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = done.send(child.wait().expect("wait"));
    });
    let status = exited.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
        // SAFETY: our own child, not yet reaped (the waiting thread holds it).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        panic!("tollgate serve started, or hung, instead of refusing to start");
    });
    assert!(!status.success(), "it must refuse to start");
    let text = reader.join().expect("stderr");
    eprintln!("refused to start: {}", text.trim());
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_during_an_outage_runs_on_its_copy_and_serves_once_redis_answers() {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "");
    let mut gw = TestGateway::start(options(&server)).await;
    // A runtime change the copy must keep: version 2, made through the admin API.
    let (status, body) = change_settings(&gw, json!({"action": "admit", "reason": "kept version"})).await;
    assert_eq!(status, 200, "{body}");
    let kept = active(&gw).await;
    assert!(kept >= 2, "a new version: {kept}");
    let client = gw.sigv4_client(&acme);
    call_model(&client, NOVA_MICRO).await.expect("admitted");
    gw.wait_for_records(1).await;
    let before = spent(&gw).await;
    assert_eq!(before.1, 1);

    // Redis away: a policy change is refused before it takes effect, since
    // it could not be kept (it used to apply here, unsaved, and answer 500).
    server.kill();
    let (status, body) = change_settings(&gw, json!({"action": "reject", "reason": "never kept"})).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("nothing changed"), "{body}");
    assert_eq!(active(&gw).await, kept);

    // The replica is killed and started again while Redis is still away.
    gw.kill();
    gw.start_again().await;
    assert_eq!(gw.healthz().await, 200);
    assert_eq!(active(&gw).await, kept, "the runtime change came back from the copy");
    let log = std::fs::read_to_string(gw.dir().join("stderr.log")).expect("stderr");
    assert!(log.contains("starting on this replica's local copy"), "{log}");

    // fail-closed: refused with 503, nothing sent, nothing charged or logged as charged.
    let sent = gw.mock.requests().len();
    let client = gw.sigv4_client(&acme);
    let refused = call_model(&client, NOVA_MICRO).await.expect_err("refused");
    assert_eq!(refused.0, 503, "{refused:?}");
    assert_eq!(gw.mock.requests().len(), sent, "nothing reached the model");
    let (status, text) = gw.readyz().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("ledger"), "{text}");

    // A change cannot be kept while on the copy: refused, and says why.
    let (status, body) = admin(&gw, Method::PATCH, "/acme", Some(json!({ "budget-usd": "7.00" }))).await;
    eprintln!("a change on the copy: {status} {body}");
    assert_eq!(status, 503, "nothing changed, so a retry later is safe: {body}");
    assert!(body.to_string().contains("local copy"), "{body}");
    let (status, body) = change_settings(&gw, json!({"action": "reject", "reason": "never kept"})).await;
    assert_eq!(status, 503, "refused before it took effect: {body}");
    assert_eq!(active(&gw).await, kept, "still the kept version");

    // Redis answers: the same process serves, on the version the fleet has.
    server.restart();
    let (status, text) = gw.readyz_within(10_000).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
    call_model(&client, NOVA_MICRO)
        .await
        .expect("served once Redis answers");
    let records = gw.wait_for_records(3).await;
    let last = records.last().expect("a record");
    assert_eq!(last.tollgate.reason, "kept version", "decided by the kept version");
    assert_eq!(spent(&gw).await.1, 2, "the refused call was not charged");
    gw.reconcile().await;
    assert_eq!(gw.healthz().await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_redis_hangs_is_not_ready_until_redis_answers() {
    let server = RedisServer::start();
    let acme = TenantSpec::new("acme", "");
    let mut options = options(&server);
    // Long enough that the ledger's first probe still waits when readiness is asked.
    options.ledger_extra = options.ledger_extra.replace("timeout-ms = 200", "timeout-ms = 4000");
    let mut gw = TestGateway::start(options).await;
    gw.kill();

    // Redis hangs: its port takes connections and nothing answers.
    server.pause();
    gw.start_again().await;
    let (status, text) = gw.readyz().await;
    assert_eq!(status, 503, "a balancer must not send it calls yet: {text}");
    assert!(text.contains("ledger"), "{text}");
    assert_eq!(gw.healthz().await, 200);

    server.resume();
    let (status, text) = gw.readyz_within(20_000).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
    call_model(&gw.sigv4_client(&acme), NOVA_MICRO)
        .await
        .expect("served once Redis answers");
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_a_copy_or_with_a_changed_file_or_sharing_one_is_refused() {
    let mut server = RedisServer::start();
    let mut gw = TestGateway::start(options(&server)).await;
    // A second replica on the same files is refused: the copy is one per replica.
    let error = refused_start(gw.dir());
    assert!(error.contains("give each replica its own"), "{error}");
    assert_eq!(gw.healthz().await, 200);
    gw.kill();
    server.kill();

    // The tenant's section changed since the copy was made: starting on the
    // copy would serve the old one, so the start is refused.
    let config = gw.dir().join("tollgate.toml");
    let toml = std::fs::read_to_string(&config).expect("config");
    let changed = toml.replacen("budget-usd = \"", "budget-usd = \"1", 1);
    assert_ne!(changed, toml);
    std::fs::write(&config, &changed).expect("write config");
    let error = refused_start(gw.dir());
    assert!(error.contains("tenant acme"), "{error}");
    assert!(error.contains("cannot be changed until Redis answers again"), "{error}");
    assert!(!error.contains("panicked"), "{error}");

    // No copy at all (a new disk): refused, saying there is nothing to start on.
    std::fs::remove_file(gw.dir().join("control-copy.redb")).expect("remove the copy");
    let error = refused_start(gw.dir());
    assert!(error.contains("no local copy"), "{error}");
    assert!(error.contains("cannot start until Redis answers"), "{error}");

    // Redis back: the changed file starts, and the copy is made again.
    server.restart();
    gw.start_again().await;
    assert_eq!(gw.healthz().await, 200);
    assert!(gw.dir().join("control-copy.redb").exists());
}

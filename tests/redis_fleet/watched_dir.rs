//! The watched policy directory of a replica on Redis. A file changed while
//! Redis does not answer waits: nothing changes, since the fleet would undo
//! a change it never saw, and the operator is told so. Once Redis answers,
//! the file is applied and saved without being touched again.

use crate::admin_api::active;
use crate::support::gateway::{NOVA_MICRO, Options, TenantSpec, TestGateway, call_model, watched_policy_dir};
use crate::support::redis::RedisServer;
use crate::support::wasm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_while_redis_is_away_waits_and_is_applied_once_it_answers() {
    let mut server = RedisServer::start();
    let policies = tempfile::tempdir().expect("dir");
    let extra = watched_policy_dir(policies.path());
    let acme = TenantSpec::new("acme", "scripted");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"watched\"\ntimeout-ms = 200\n",
            server.url()
        ),
        extra_toml: extra,
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme);
    call_model(&client, NOVA_MICRO).await.expect("admitted");
    assert_eq!(active(&gw).await, 1);

    // Redis away: the new file waits, says why, and changes nothing.
    server.kill();
    let seen = gw.policy_dir_generation().await;
    std::fs::write(policies.path().join("acme.wasm"), wasm("scripted")).expect("write component");
    std::fs::write(
        policies.path().join("acme.toml"),
        "policy = \"acme.wasm\"\ndeadline-ms = 200\n[config]\naction = \"reject\"\nreason = \"from the directory\"\n",
    )
    .expect("write file");
    let (mut seen, file) = gw.next_policy_file_outcome("acme", seen).await;
    eprintln!("while Redis is away: {file}");
    assert_eq!(file["outcome"], "waiting", "{file}");
    assert!(
        file["error"].as_str().expect("why").contains("nothing changed"),
        "{file}"
    );
    assert_eq!(active(&gw).await, 1, "nothing changed");
    let metrics = gw.metrics().await;
    assert!(
        !metrics.contains("tollgate_policy_dir_errors_total{tenant=\"acme\"}"),
        "the file is not wrong: {metrics}"
    );

    // Redis answers: the same file is applied, untouched, and decides.
    server.restart();
    let file = loop {
        let (next, file) = gw.next_policy_file_outcome("acme", seen).await;
        seen = next;
        if file["outcome"] != "waiting" {
            break file;
        }
    };
    assert_eq!(file["outcome"], "active", "{file}");
    assert_eq!(active(&gw).await, 2, "{file}");
    let (status, text) = gw.readyz_within(10_000).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
    let refused = call_model(&client, NOVA_MICRO)
        .await
        .expect_err("rejected by the file's version");
    assert!(refused.0 < 500, "{refused:?}");
    let records = gw.wait_for_records(2).await;
    let last = &records.last().expect("a record").tollgate;
    assert_eq!(
        (last.decision.as_str(), last.reason.as_str()),
        ("reject", "from the directory")
    );
    let log = std::fs::read_to_string(gw.dir().join("stderr.log")).expect("stderr");
    assert_eq!(
        log.matches("a policy file waits").count(),
        1,
        "said once, retried quietly: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    gw.reconcile().await;
}

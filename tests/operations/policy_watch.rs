//! The watched policy directory, with the real gateway and the real SDK: a
//! broken file leaves the running version deciding and says why; a good
//! one is active within a second; a file written in parts is applied once
//! whole; and a restart adds no version for an unchanged file.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::gateway::{NOVA_MICRO, Options, TenantSpec, TestGateway, call_model, watched_policy_dir};
use crate::support::wasm;
use serde_json::Value;

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// acme's file status once the watcher records its next outcome after `generation`.
async fn next_outcome(gw: &TestGateway, generation: u64) -> (u64, Value) {
    gw.next_policy_file_outcome("acme", generation).await
}

async fn generation(gw: &TestGateway) -> u64 {
    gw.policy_dir_generation().await
}

async fn active(gw: &TestGateway) -> String {
    gw.admin_get("/admin/tenants/acme/policy").await["version"]
        .as_str()
        .expect("version")
        .to_owned()
}

fn write_policy(dir: &Path, wasm_bytes: &[u8]) {
    std::fs::write(dir.join("acme.wasm"), wasm_bytes).expect("write component");
    std::fs::write(dir.join("acme.toml"), "policy = \"acme.wasm\"\ndeadline-ms = 200\n").expect("write file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_directory_applies_good_files_and_refuses_broken_ones() {
    let policies = tempfile::tempdir().expect("dir");
    let extra = watched_policy_dir(policies.path());
    let tiered = TenantSpec {
        tier: "free",
        extra: "included-tokens = 100000000\n",
        ..TenantSpec::new("acme", "allow-all")
    };
    let mut gw = TestGateway::start(Options {
        tenants: vec![tiered.clone()],
        extra_toml: extra,
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&tiered);
    assert_eq!(active(&gw).await, "acme@v1");

    // A broken component: refused, with why; allow-all keeps deciding.
    let seen = generation(&gw).await;
    write_policy(policies.path(), b"\0asm but not a component");
    let (seen, file) = next_outcome(&gw, seen).await;
    assert_eq!(file["outcome"], "refused", "{file}");
    assert!(file["error"].as_str().expect("error").contains("acme"), "{file}");
    assert_eq!(active(&gw).await, "acme@v1");
    call_model(&client, HAIKU).await.expect("allow-all still admits");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("tollgate_policy_dir_errors_total{tenant=\"acme\"} 1"),
        "{metrics}"
    );

    // A good one, written in two parts as an editor might: active within a second.
    let tiered_wasm = wasm("tiered");
    let started = Instant::now();
    std::fs::write(policies.path().join("acme.wasm"), &tiered_wasm[..tiered_wasm.len() / 2]).expect("half");
    std::fs::write(policies.path().join("acme.wasm"), &tiered_wasm).expect("whole");
    // The half-written component may be read and refused first; the whole one follows.
    let (mut seen, mut file) = next_outcome(&gw, seen).await;
    for _ in 0..2 {
        if file["outcome"] == "active" {
            break;
        }
        (seen, file) = next_outcome(&gw, seen).await;
    }
    assert_eq!(file["outcome"], "active", "{file}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "active after {took:?}");
    let version = file["version"].as_str().expect("version").to_owned();
    assert_eq!(active(&gw).await, version);
    call_model(&client, HAIKU).await.expect("served");
    call_model(&client, NOVA_MICRO).await.expect("served");
    let records = gw.wait_for_records(3).await;
    assert_eq!(records[1].tollgate.decision, "downgrade", "tiered decides now");
    assert_eq!(records[1].tollgate.policy_version.as_deref(), Some(version.as_str()));

    // Unchanged across a restart: no new version. The directory is read
    // before the ports open, so its outcome is there at once.
    gw.restart().await;
    let (_, file) = next_outcome(&gw, 0).await;
    assert_eq!(file["outcome"], "unchanged", "{file}");
    assert_eq!(active(&gw).await, version);
    let versions = gw.admin_get("/admin/tenants/acme/policy/versions").await;
    assert_eq!(versions.as_array().expect("list").len(), 2, "{versions}");
}

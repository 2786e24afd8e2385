//! The watched policy directory, with the real gateway and the real SDK: a
//! broken file leaves the running version deciding and says why; a good
//! one is active within a second; a file written in parts is applied once
//! whole; and a restart adds no version for an unchanged file.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::gateway::{ADMIN_TOKEN, NOVA_MICRO, Options, TenantSpec, TestGateway, call_model};
use crate::support::wasm;
use serde_json::Value;

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

async fn admin_get(gw: &TestGateway, path: &str) -> Value {
    gw.raw()
        .get(format!("{}{path}", gw.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin API answers")
        .json()
        .await
        .expect("JSON")
}

/// Waits (up to `limit`) until the directory status of `acme.toml` satisfies `done`.
async fn until(gw: &TestGateway, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let status = admin_get(gw, "/admin/policy-dir").await;
        let file = status["files"]
            .as_array()
            .and_then(|files| files.iter().find(|f| f["tenant"] == "acme"))
            .cloned()
            .unwrap_or(Value::Null);
        if done(&file) {
            return file;
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {status}");
        // A poll of the observable state, not a guess at how long it takes.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn active(gw: &TestGateway) -> String {
    admin_get(gw, "/admin/tenants/acme/policy").await["version"]
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
    let extra: &'static str = Box::leak(
        format!(
            "[policy-dir]\npath = {:?}\ndebounce-ms = 50\n",
            policies.path().display().to_string()
        )
        .into_boxed_str(),
    );
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
    write_policy(policies.path(), b"\0asm but not a component");
    let file = until(&gw, Duration::from_secs(10), |f| f["outcome"] == "refused").await;
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
    let file = until(&gw, Duration::from_secs(10), |f| f["outcome"] == "active").await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "active after {took:?}");
    let version = file["version"].as_str().expect("version").to_owned();
    assert_eq!(active(&gw).await, version);
    call_model(&client, HAIKU).await.expect("served");
    call_model(&client, NOVA_MICRO).await.expect("served");
    let records = gw.wait_for_records(3).await;
    assert_eq!(records[1].tollgate.decision, "downgrade", "tiered decides now");
    assert_eq!(records[1].tollgate.policy_version.as_deref(), Some(version.as_str()));

    // Unchanged across a restart: no new version.
    gw.restart().await;
    let file = until(&gw, Duration::from_secs(10), |f| !f.is_null()).await;
    assert_eq!(file["outcome"], "unchanged", "{file}");
    assert_eq!(active(&gw).await, version);
    let versions = admin_get(&gw, "/admin/tenants/acme/policy/versions").await;
    assert_eq!(versions.as_array().expect("list").len(), 2, "{versions}");
}

//! `tollgate admin` against a running gateway, as an operator types it:
//! list tenants, set a budget, issue a key, upload with cases, shadow,
//! promote and roll back. Each command's effect is checked through the
//! tenant's own SDK calls or the admin API.

use std::process::Output;

use crate::support::gateway::{NOVA_MICRO, Options, TenantSpec, TestGateway, call_model};
use crate::support::{component, example_cases};

/// Runs `tollgate admin <args>` against the gateway; its config names the
/// URL and token, as an operator's would.
async fn admin(gw: &TestGateway, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .arg("admin")
        .arg("--url")
        .arg(&gw.admin_url)
        .arg("--config")
        .arg(gw.dir().join("tollgate.toml"))
        .args(args)
        .env_remove("TOLLGATE_ADMIN_TOKEN");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run tollgate admin")
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_tenant_and_policy_lifecycle_from_the_command_line() {
    let gw = TestGateway::start(Options {
        tenants: vec![TenantSpec::new("acme", "allow-all")],
        ..Options::default()
    })
    .await;
    let acme = TenantSpec::new("acme", "allow-all");

    let table = ok(&admin(&gw, &["tenants", "list"]).await);
    assert!(table.contains("acme") && table.contains("$100.00"), "{table}");

    ok(&admin(&gw, &["tenant", "set-budget", "acme", "50"]).await);
    assert_eq!(gw.tenant_state("acme").await["budget-nano-usd"], 50_000_000_000u64);

    // A key issued from the command line signs a tenant's SDK calls at once.
    let issued: serde_json::Value =
        serde_json::from_str(&ok(&admin(&gw, &["keys", "issue", "acme", "--sigv4"]).await)).expect("JSON");
    let client = gw.sigv4_client_with(
        issued["id"].as_str().expect("id"),
        issued["secret"].as_str().expect("secret"),
    );
    call_model(&client, NOVA_MICRO).await.expect("the new key works");

    // An upload whose cases fail is refused with the gateway's reason.
    let tiered = component("tiered").display().to_string();
    let wrong_cases = example_cases("budget-guard").display().to_string();
    let refused = admin(&gw, &["policy", "upload", "acme", &tiered, "--cases", &wrong_cases]).await;
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("bundled cases"), "{why}");

    let right_cases = example_cases("tiered").display().to_string();
    let uploaded = ok(&admin(&gw, &["policy", "upload", "acme", &tiered, "--cases", &right_cases]).await);
    assert!(uploaded.contains("acme@v"), "{uploaded}");
    let budget_guard = component("budget-guard").display().to_string();
    ok(&admin(&gw, &["policy", "shadow", "acme", &budget_guard]).await);
    call_model(&gw.sigv4_client(&acme), NOVA_MICRO).await.expect("served");
    gw.settled("acme").await;
    let report = ok(&admin(&gw, &["policy", "shadow-report", "acme"]).await);
    assert!(report.contains("\"calls\": 1"), "{report}");
    let promoted = ok(&admin(&gw, &["policy", "promote", "acme"]).await);
    let rolled_back = ok(&admin(&gw, &["policy", "rollback", "acme"]).await);
    assert_ne!(promoted, rolled_back);
    let versions = ok(&admin(&gw, &["policy", "versions", "acme"]).await);
    assert!(versions.contains("admin upload by admin"), "{versions}");

    // New settings are a new version; a config the policy refuses is refused.
    let set = ok(&admin(
        &gw,
        &["policy", "set", "acme", "--deadline-ms", "50", "--failure-mode", "open"],
    )
    .await);
    assert!(set.contains("acme@v"), "{set}");
    let shown = ok(&admin(&gw, &["policy", "show", "acme"]).await);
    assert!(
        shown.contains("\"deadline-ms\": 50") && shown.contains("\"failure-mode\": \"open\""),
        "{shown}"
    );
    ok(&admin(&gw, &["policy", "upload", "acme", &tiered]).await);
    let refused = admin(
        &gw,
        &[
            "policy",
            "set",
            "acme",
            "--policy-config",
            r#"{"pro-downgrade-at-percent": 300}"#,
        ],
    )
    .await;
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("pro-downgrade-at-percent"), "{why}");

    let unknown = admin(&gw, &["tenant", "show", "nobody"]).await;
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("404"));
}

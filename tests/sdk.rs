//! The Rust policy SDK's own unit tests (money arithmetic, config parsing,
//! verdict builders), run natively from the policies workspace.

mod support;

use std::process::Command;

#[test]
fn policy_sdk_unit_tests_pass() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "test",
            "--release",
            "--quiet",
            "-p",
            "tollgate-policy",
            "--manifest-path",
        ])
        .arg(support::repo().join("policies/Cargo.toml"))
        .output()
        .expect("run cargo test for the policy SDK");
    assert!(
        out.status.success(),
        "policy SDK tests failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

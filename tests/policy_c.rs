//! C policies: the template builds from source with `tollgate policy build`
//! into a component that imports nothing but the host, loads, decides and
//! checks its parameters; a reused instance frees what each call gave it;
//! the compiler's errors and a policy that needs the operating system are
//! reported in words the author can act on.

mod support;

use support::*;
use tollgate_host::{Action, PolicySettings, PolicyVersion, RejectKind};

fn settings(config: &str) -> PolicySettings {
    PolicySettings {
        config: config.into(),
        // A cold first call on a busy 2-core machine; the point is the verdict.
        deadline_ms: 200,
        ..PolicySettings::default()
    }
}

fn template_version(config: &str) -> PolicyVersion {
    let engine = cached_engine();
    let component = engine
        .load_file(&guest_component("c/template", None))
        .expect("the C template loads");
    PolicyVersion::build(&engine, component, tenant("t"), 1, settings(config), "c".into()).expect("version")
}

#[test]
fn the_c_template_builds_loads_and_decides() {
    let path = guest_component("c/template", None);
    let check = tollgate().args(["policy", "check"]).arg(&path).output().expect("run");
    assert!(
        check.status.success(),
        "policy check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let version = template_version("");
    let decision = version.decide(&mut request(), &state());
    assert!(decision.failure.is_none(), "{decision:?}");
    assert_eq!(decision.action, Action::Admit);
    assert_eq!(decision.reason, "10% of the budget with this call");
    assert_eq!(
        decision.metadata,
        vec![("budget-percent".to_string(), "10".to_string())]
    );

    let version = template_version(r#"{"max-percent": 5}"#);
    let decision = version.decide(&mut request(), &state());
    assert_eq!(decision.action, Action::Reject(RejectKind::BudgetExhausted));
    assert_eq!(decision.reason, "this call would take spend to 10% of $100.00");
}

#[test]
fn the_c_template_refuses_bad_parameters_in_words() {
    let engine = cached_engine();
    let component = engine.load_file(&guest_component("c/template", None)).expect("loads");
    for (config, says) in [
        (r#"{"max-percent": 0}"#, "max-percent is 0; use 1 to 100"),
        (
            r#"{"max-percent": "ten"}"#,
            r#"config key "max-percent" must be a whole number of 0 or more, not a string"#,
        ),
        (r#"{"max-percent": -1}"#, "not a negative number"),
        (r#"{"max-percent": 1.5}"#, "not a fractional number"),
        (
            r#"{"max-percnt": 5}"#,
            r#"unknown config key "max-percnt"; expected one of max-percent"#,
        ),
        (r#"{"max-percent": 5"#, "config is not valid JSON"),
        ("[]", "config must be a JSON object"),
    ] {
        let err = PolicyVersion::build(&engine, component.clone(), tenant("t"), 1, settings(config), "c".into())
            .expect_err(config);
        assert!(err.to_string().contains(says), "{config}: {err}");
    }
}

/// The host may reuse an instance for many calls: the request, the state
/// and the verdict's strings must all be freed, or memory grows call by
/// call. Each call here carries 256 KiB of metadata.
#[test]
fn a_reused_instance_does_not_grow() {
    let version = template_version("");
    let mut request = request();
    request.metadata = vec![("note".into(), "x".repeat(256 << 10))];
    let mut sizes = Vec::new();
    for _ in 0..40 {
        let decision = version.decide(&mut request.clone(), &state());
        assert!(decision.failure.is_none(), "{decision:?}");
        sizes.push(version.instance_memory_bytes().expect("a warm instance"));
    }
    assert!(
        sizes.windows(2).skip(1).all(|w| w[1] <= w[0]),
        "memory grew from call to call: {sizes:?}"
    );
}

/// Builds a one-file C policy in a scratch directory; the build's output.
fn build_source(source: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("broken");
    std::fs::create_dir(&policy).expect("mkdir");
    std::fs::write(policy.join("policy.c"), source).expect("write");
    tollgate()
        .args(["policy", "build"])
        .arg(&policy)
        .arg("--tools")
        .arg(guest_tools())
        .output()
        .expect("run tollgate policy build")
}

const GOOD_VALIDATE: &str = "#include \"tollgate_policy.h\"\nconst char *validate_config(tollgate_string c) { return tollgate_no_parameters(c); }\n";

#[test]
fn a_compiler_error_reaches_the_author() {
    let source = format!(
        "{GOOD_VALIDATE}void decide(const tollgate_request *r, const tollgate_state *s, tollgate_verdict *v) {{\n    tollgate_admit(v, \"ok\")\n}}\n"
    );
    let output = build_source(&source);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the C compiler failed"), "{stderr}");
    assert!(
        stderr.contains("policy.c:4:") && stderr.contains("expected ';'"),
        "{stderr}"
    );
}

#[test]
fn a_policy_that_needs_the_operating_system_is_refused() {
    let source = format!(
        "{GOOD_VALIDATE}#include <stdio.h>\nvoid decide(const tollgate_request *r, const tollgate_state *s, tollgate_verdict *v) {{\n    printf(\"deciding\\n\");\n    tollgate_admit(v, \"ok\");\n}}\n"
    );
    let output = build_source(&source);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("functions that need the operating system") && stderr.contains("tollgate_log"),
        "{stderr}"
    );
    assert!(stderr.contains("wasi_snapshot_preview1::fd_write"), "{stderr}");
}

#[test]
fn the_build_names_what_a_c_directory_lacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = tollgate()
        .args(["policy", "build"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("policy.c"), "{stderr}");
}

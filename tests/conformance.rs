//! One contract, four languages: the Rust, Python, JavaScript (on two
//! engines) and C builds of budget-guard and of business-hours, each
//! compiled from source, pass the same conformance cases through the real
//! host, and refuse the same bad parameters at load time.

mod support;

use std::path::PathBuf;

use support::*;
use tollgate_host::VersionError;
use tollgate_host::registry::cases::{self, CasesFile};
use tollgate_host::{PolicySettings, PolicyVersion, Registry, RegistryError};

/// Every build of an example policy (`budget-guard`, `business-hours`):
/// (label, component).
fn builds(policy: &str) -> Vec<(&'static str, PathBuf)> {
    let guest = |language: &str, engine| guest_component(&format!("{language}/examples/{policy}"), engine);
    vec![
        ("rust", component(policy)),
        ("python", guest("python", None)),
        ("javascript (quickjs)", guest("js", Some("quickjs"))),
        ("javascript (starlingmonkey)", guest("js", Some("starlingmonkey"))),
        ("c", guest("c", None)),
    ]
}

/// Interpreted guests get the room a cold first call needs on a busy
/// 2-core machine; the point here is the verdicts.
fn settings() -> PolicySettings {
    PolicySettings {
        deadline_ms: 1000,
        memory_limit_mib: 64,
        ..PolicySettings::default()
    }
}

/// Runs a policy's conformance suite on every build of it.
fn passes_in_every_language(policy: &str, at_least: usize) {
    let cases = CasesFile::load(&conformance_cases(policy)).expect("cases parse");
    assert!(
        cases.cases.len() >= at_least,
        "the suite has {} cases",
        cases.cases.len()
    );
    let engine = cached_engine();
    let mut report = Vec::new();
    for (label, path) in builds(policy) {
        let component = engine.load_file(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
        let version = PolicyVersion::build(&engine, component, tenant("t"), 1, settings(), label.into())
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let outcomes = cases::run(&version, &cases);
        assert_eq!(outcomes.len(), cases.cases.len());
        for outcome in outcomes.iter().filter(|o| !o.passed()) {
            report.push(format!("{label}: {outcome}"));
        }
    }
    assert!(
        report.is_empty(),
        "{policy} conformance failures:\n{}",
        report.join("\n")
    );
}

#[test]
fn every_language_passes_the_conformance_cases() {
    passes_in_every_language("budget-guard", 15);
}

/// Contract 0.2.0: the tenant's local clock (across daylight-saving changes
/// in two zones) and the priced downgrade chain, read alike in every language.
#[test]
fn every_language_passes_the_business_hours_cases() {
    passes_in_every_language("business-hours", 10);
}

#[test]
fn every_language_refuses_the_same_bad_parameters() {
    let registry = Registry::new(cached_engine());
    for (label, path) in builds("budget-guard") {
        let wasm = std::fs::read(&path).expect("read component");
        for (config, says) in [
            (r#"{"downgrade-at-percent": 250}"#, "downgrade-at-percent"),
            (r#"{"reject-at-percent": 0}"#, "reject-at-percent"),
            (r#"{"downgrade-on-alert": "purple"}"#, "downgrade-on-alert"),
            (r#"{"downgrade-chain": [""]}"#, "downgrade-chain"),
            (r#"{"unknown-key": 1}"#, "unknown-key"),
        ] {
            refuses_config(&registry, label, &wasm, config, says);
        }
        let good = PolicySettings {
            config: r#"{"downgrade-at-percent": 50}"#.into(),
            ..settings()
        };
        registry
            .register(&tenant("t"), &wasm, good, label, None)
            .unwrap_or_else(|e| panic!("{label} refused a good config: {e}"));
    }
}

#[test]
fn policy_test_cli_runs_the_suite_for_a_python_and_a_javascript_build() {
    for path in [
        guest_component("python/examples/budget-guard", None),
        guest_component("js/examples/budget-guard", Some("quickjs")),
    ] {
        let out = tollgate()
            .args(["policy", "test"])
            .arg(&path)
            .arg(conformance_cases("budget-guard"))
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {stdout}\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    }
}

/// QuickJS carries u64 as a double. Above 2^53 the helper fails the call
/// (the failure mode applies) rather than decide on a rounded budget;
/// StarlingMonkey passes BigInt and decides exactly.
#[test]
fn javascript_u64_beyond_2_pow_53_is_exact_or_fails_closed() {
    let engine = cached_engine();
    let mut state = state();
    state.budget.limit = (1 << 60) + 1;
    state.budget.spent = 1 << 59;
    for (js_engine, exact) in [("starlingmonkey", true), ("quickjs", false)] {
        let path = guest_component("js/examples/budget-guard", Some(js_engine));
        let component = engine.load_file(&path).expect("loads");
        let version =
            PolicyVersion::build(&engine, component, tenant("t"), 1, settings(), js_engine.into()).expect("version");
        let decision = version.decide(&mut request(), &state);
        if exact {
            assert!(decision.failure.is_none(), "{js_engine}: {decision:?}");
            assert_eq!(decision.action, tollgate_host::Action::Admit);
            assert!(
                decision.reason.contains("$1,152,921,504.60"),
                "{js_engine}: {}",
                decision.reason
            );
        } else {
            let failure = decision
                .failure
                .as_ref()
                .expect("quickjs must not decide on a rounded figure");
            // The helper's RangeError leaves the guest as a trap.
            assert_eq!(failure.kind, tollgate_host::FailureKind::Trap, "{failure}");
            assert_eq!(
                decision.action,
                tollgate_host::Action::Reject(tollgate_host::RejectKind::Denied)
            );
        }
    }
}

#[test]
fn business_hours_takes_no_parameters_in_any_language() {
    let registry = Registry::new(cached_engine());
    for (label, path) in builds("business-hours") {
        let wasm = std::fs::read(&path).expect("read component");
        for config in ["", "{}"] {
            let settings = PolicySettings {
                config: config.into(),
                ..settings()
            };
            registry
                .register(&tenant("t"), &wasm, settings, label, None)
                .unwrap_or_else(|e| panic!("{label} refused {config:?}: {e}"));
        }
        for (config, says) in [(r#"{"start-hour": 8}"#, "start-hour"), ("[9, 18]", "JSON object")] {
            refuses_config(&registry, label, &wasm, config, says);
        }
    }
}

/// Registering `wasm` with `config` is refused by the policy's own check,
/// with a message that names `says`.
fn refuses_config(registry: &Registry, label: &str, wasm: &[u8], config: &str, says: &str) {
    let settings = PolicySettings {
        config: config.into(),
        ..settings()
    };
    let err = registry
        .register(&tenant("t"), wasm, settings, label, None)
        .expect_err(&format!("{label} accepted {config}"));
    assert!(
        matches!(
            &err,
            RegistryError::Version {
                source: VersionError::ConfigRefused(_),
                ..
            }
        ),
        "{label}, {config}: {err}"
    );
    assert!(err.to_string().contains(says), "{label}, {config}: {err}");
}

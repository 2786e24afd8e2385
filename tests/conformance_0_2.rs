//! Contract 0.2.0 in three languages: the Rust, Python and JavaScript builds
//! of business-hours, each compiled from source, read the tenant's local
//! clock and the priced downgrade chain the same way, pass the same
//! conformance cases through the real host, and refuse parameters alike.

mod support;

use std::path::PathBuf;

use support::*;
use tollgate_host::VersionError;
use tollgate_host::registry::cases::{self, CasesFile};
use tollgate_host::{PolicySettings, PolicyVersion, Registry, RegistryError};

/// Every build of business-hours: (label, component).
fn builds() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("rust", component("business-hours")),
        ("python", guest_component("python/examples/business-hours", None)),
        (
            "javascript (quickjs)",
            guest_component("js/examples/business-hours", Some("quickjs")),
        ),
        (
            "javascript (starlingmonkey)",
            guest_component("js/examples/business-hours", Some("starlingmonkey")),
        ),
        ("c", guest_component("c/examples/business-hours", None)),
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

#[test]
fn every_language_passes_the_business_hours_cases() {
    let cases = CasesFile::load(&conformance_cases("business-hours")).expect("cases parse");
    assert!(cases.cases.len() >= 10, "the suite has {} cases", cases.cases.len());
    let engine = cached_engine();
    let mut report = Vec::new();
    for (label, path) in builds() {
        let component = engine.load_file(&path).unwrap_or_else(|e| panic!("{label}: {e}"));
        let version = PolicyVersion::build(&engine, component, tenant("t"), 1, settings(), label.into())
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let outcomes = cases::run(&version, &cases);
        assert_eq!(outcomes.len(), cases.cases.len());
        for outcome in outcomes.iter().filter(|o| !o.passed()) {
            report.push(format!("{label}: {outcome}"));
        }
    }
    assert!(report.is_empty(), "conformance failures:\n{}", report.join("\n"));
}

#[test]
fn every_language_takes_no_parameters() {
    let registry = Registry::new(cached_engine());
    for (label, path) in builds() {
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
            let settings = PolicySettings {
                config: config.into(),
                ..settings()
            };
            let err = registry
                .register(&tenant("t"), &wasm, settings, label, None)
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
    }
}

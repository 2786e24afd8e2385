//! Hot swap and rollback under concurrent decisions: no decision fails, each
//! finishes on the version it started with, and every decision that starts
//! after a swap uses the new version.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use support::*;
use tollgate_host::cases::CasesFile;
use tollgate_host::{Action, PolicySettings, Registry, RegistryError};

/// Five busy threads share two cores here, so a 5 ms wall-clock deadline
/// would measure the scheduler; the point of this test is the swap.
fn relaxed() -> PolicySettings {
    PolicySettings {
        deadline_ms: 200,
        ..PolicySettings::default()
    }
}

#[test]
fn swapping_under_load_fails_no_decision() {
    let registry = Arc::new(Registry::new(engine()));
    let acme = tenant("acme");
    register(&registry, "acme", "allow-all", relaxed());
    let allow_all = wasm("allow-all");
    let budget_guard = wasm("budget-guard");

    // The version number the registry has most recently made active; a
    // decision that starts after reading it must run on it or a later one.
    let published = Arc::new(AtomicU32::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (registry, published, stop, acme) = (
                Arc::clone(&registry),
                Arc::clone(&published),
                Arc::clone(&stop),
                acme.clone(),
            );
            std::thread::spawn(move || {
                let mut decisions = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let floor = published.load(Ordering::Acquire);
                    let decision = registry.decide(&acme, &mut request(), &state()).expect("tenant exists");
                    assert!(
                        decision.failure.is_none(),
                        "a decision failed during a swap: {decision:?}"
                    );
                    assert_eq!(decision.action, Action::Admit);
                    assert!(
                        decision.version.number >= floor,
                        "decided on v{} after v{floor} was active",
                        decision.version.number
                    );
                    decisions += 1;
                }
                decisions
            })
        })
        .collect();

    for round in 0..20 {
        let wasm = if round % 2 == 0 { &budget_guard } else { &allow_all };
        let id = registry.register(&acme, wasm, relaxed(), "swap", None).expect("swap");
        published.store(id.number, Ordering::Release);
        // Let every worker decide at least once on this version.
        let target = id.number;
        loop {
            let d = registry.decide(&acme, &mut request(), &state()).expect("tenant");
            if d.version.number == target {
                break;
            }
        }
    }
    stop.store(true, Ordering::Release);
    let total: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    assert!(total > 0);
    assert_eq!(registry.active(&acme).expect("active").id().number, 21);
}

#[test]
fn rollback_returns_to_the_previous_version_and_keeps_history() {
    let registry = Registry::new(engine());
    let acme = tenant("acme");
    register(&registry, "acme", "allow-all", PolicySettings::default());
    register(&registry, "acme", "budget-guard", PolicySettings::default());
    let decision = registry.decide(&acme, &mut request(), &state()).expect("decide");
    assert_eq!(decision.version.number, 2);
    assert!(!decision.reason.starts_with("allow-all"), "{}", decision.reason);

    let back = registry.rollback(&acme).expect("rollback");
    assert_eq!(back.number, 1);
    let decision = registry.decide(&acme, &mut request(), &state()).expect("decide");
    assert_eq!(decision.version.number, 1);
    assert!(decision.reason.starts_with("allow-all"), "{}", decision.reason);

    assert!(matches!(
        registry.rollback(&acme),
        Err(RegistryError::NoPreviousVersion(_))
    ));
    assert_eq!(registry.activate(&acme, 2).expect("activate").number, 2);
    assert_eq!(registry.versions(&acme).len(), 2);
    assert!(matches!(
        registry.activate(&acme, 9),
        Err(RegistryError::UnknownVersion { number: 9, .. })
    ));
}

#[test]
fn a_version_is_activated_only_after_config_and_cases_pass() {
    let registry = Registry::new(engine());
    let acme = tenant("acme");
    register(&registry, "acme", "allow-all", PolicySettings::default());

    // A config that the policy's validate-config refuses.
    let bad_config = PolicySettings {
        config: r#"{"downgrade-at-percent": 250}"#.into(),
        ..PolicySettings::default()
    };
    let err = registry
        .register(&acme, &wasm("budget-guard"), bad_config, "bad", None)
        .unwrap_err();
    assert!(matches!(err, RegistryError::Version { .. }), "{err}");
    assert!(err.to_string().contains("downgrade-at-percent"), "{err}");

    // Cases that the new version fails.
    let cases = CasesFile::parse(
        "[[case]]\nname = \"expects a reject\"\nexpect = { action = \"reject\" }\n",
        "inline.toml",
    )
    .expect("cases parse");
    let err = registry
        .register(
            &acme,
            &wasm("budget-guard"),
            PolicySettings::default(),
            "x",
            Some(&cases),
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            RegistryError::CasesFailed {
                failed: 1,
                total: 1,
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("FAIL expects a reject"), "{text}");

    let active = registry.active(&acme).expect("still active");
    assert_eq!(active.id().number, 1, "refused versions change nothing");
    assert_eq!(registry.versions(&acme).len(), 1);
}

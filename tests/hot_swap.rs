//! Hot swap and rollback under concurrent decisions: no decision fails, each
//! finishes on the version it started with, and every decision that starts
//! after a swap uses the new version.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use support::*;
use tollgate_host::registry::Candidate;
use tollgate_host::registry::cases::CasesFile;
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

    let version = |n: u32| {
        registry
            .versions(&acme)
            .into_iter()
            .find(|v| v.id().number == n)
            .expect("kept")
    };
    assert!(
        version(2).instance_memory_bytes().is_some(),
        "the active version keeps a warm instance"
    );

    let back = registry.rollback(&acme).expect("rollback");
    assert_eq!(back.number, 1);
    let decision = registry.decide(&acme, &mut request(), &state()).expect("decide");
    assert_eq!(decision.version.number, 1);
    assert!(decision.reason.starts_with("allow-all"), "{}", decision.reason);
    // The version swapped out holds no idle instance, and so no memory.
    assert!(version(2).instance_memory_bytes().is_none());
    assert!(version(1).instance_memory_bytes().is_some());

    assert!(matches!(
        registry.rollback(&acme),
        Err(RegistryError::NoPreviousVersion(_))
    ));
    assert_eq!(registry.activate(&acme, 2).expect("activate").number, 2);
    assert!(version(1).instance_memory_bytes().is_none());
    assert!(
        version(2).instance_memory_bytes().is_some(),
        "active again, it has an instance ready before its first call"
    );
    registry.decide(&acme, &mut request(), &state()).expect("decide");
    assert!(
        version(2).instance_memory_bytes().is_some(),
        "active again, it keeps instances again"
    );
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

/// Python and JavaScript policies swap like Rust ones: each loads, is
/// replaced under concurrent decisions, and is rolled back, with no failed
/// decision and every decision on the newest version it could see.
#[test]
fn python_and_javascript_policies_swap_and_roll_back_under_load() {
    let python = std::fs::read(guest_component("python/examples/budget-guard", None)).expect("python build");
    let javascript = std::fs::read(guest_component("js/examples/budget-guard", Some("quickjs"))).expect("js build");
    let guest = || PolicySettings {
        memory_limit_mib: 64,
        ..relaxed()
    };
    let registry = Arc::new(Registry::new(cached_engine()));
    let acme = tenant("acme");
    // v1: Python.
    registry
        .register(&acme, &python, guest(), "python", None)
        .expect("python loads");

    let published = Arc::new(AtomicU32::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (registry, published, stop, acme) = (
                Arc::clone(&registry),
                Arc::clone(&published),
                Arc::clone(&stop),
                acme.clone(),
            );
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Acquire) {
                    let floor = published.load(Ordering::Acquire);
                    let decision = registry.decide(&acme, &mut request(), &state()).expect("tenant exists");
                    assert!(decision.failure.is_none(), "a decision failed: {decision:?}");
                    // Both builds admit this request with the same reason.
                    assert_eq!(decision.action, Action::Admit, "{decision:?}");
                    assert!(
                        decision.reason.contains("10% of the $100.00 budget"),
                        "{}",
                        decision.reason
                    );
                    assert!(
                        decision.version.number >= floor || floor == 0,
                        "v{} after v{floor}",
                        decision.version.number
                    );
                    seen.insert(decision.version.number);
                }
                seen
            })
        })
        .collect();

    let wait_for = |number: u32| loop {
        let d = registry.decide(&acme, &mut request(), &state()).expect("tenant");
        assert!(d.failure.is_none(), "{d:?}");
        if d.version.number == number {
            break;
        }
    };
    // v2: JavaScript replaces Python while the workers decide.
    let id = registry
        .register(&acme, &javascript, guest(), "javascript", None)
        .expect("js loads");
    assert_eq!(id.number, 2);
    published.store(2, Ordering::Release);
    wait_for(2);
    // v3: Python again (a new version of the same bytes).
    let id = registry
        .register(&acme, &python, guest(), "python", None)
        .expect("python again");
    published.store(id.number, Ordering::Release);
    wait_for(id.number);
    // Roll back to JavaScript. The floor goes down on purpose: rollback is
    // the one operation that activates an older number.
    published.store(0, Ordering::Release);
    assert_eq!(registry.rollback(&acme).expect("rollback").number, 2);
    wait_for(2);
    stop.store(true, Ordering::Release);
    let mut seen = std::collections::BTreeSet::new();
    for worker in workers {
        seen.extend(worker.join().expect("worker"));
    }
    assert!(seen.contains(&1) && seen.contains(&2), "workers decided on {seen:?}");
    let active = registry.active(&acme).expect("active");
    assert_eq!(active.id().number, 2);
    assert_eq!(active.source(), "javascript");
}

#[test]
fn activations_follow_the_order_they_were_requested_in() {
    let registry = Registry::new(engine());
    let acme = tenant("acme");
    register(&registry, "acme", "allow-all", relaxed());
    let (allow_all, budget_guard) = (wasm("allow-all"), wasm("budget-guard"));
    // Asked for first, but its activation comes last, as a slower compile would.
    let earlier = registry
        .stage(&acme, Candidate::Wasm(&budget_guard), relaxed(), "earlier", None)
        .expect("stage");
    let later = registry
        .stage(&acme, Candidate::Wasm(&allow_all), relaxed(), "later", None)
        .expect("stage");
    assert_eq!((earlier.id().number, later.id().number), (2, 3));
    assert_eq!(registry.activate_staged(later).expect("activate").number, 3);
    assert!(matches!(
        registry.activate_staged(earlier),
        Err(RegistryError::Superseded {
            number: 2,
            newer: 3,
            ..
        })
    ));
    assert_eq!(registry.active(&acme).expect("active").id().number, 3);
    // Kept, and still activated by number when wanted.
    assert_eq!(registry.versions(&acme).len(), 3);
    assert_eq!(registry.activate(&acme, 2).expect("activate").number, 2);
}

#[test]
fn a_shadow_decides_beside_the_active_version_and_is_promoted_in_one_step() {
    let registry = Registry::new(engine());
    let acme = tenant("acme");
    register(&registry, "acme", "allow-all", relaxed());
    assert!(matches!(registry.promote(&acme), Err(RegistryError::NoShadow(_))));
    let shadow = registry
        .set_shadow(&acme, &wasm("budget-guard"), relaxed(), "candidate", None)
        .expect("shadow");
    assert_eq!(shadow.number, 2);
    // The active version still decides; the shadow is there to be run beside it.
    let decision = registry.decide(&acme, &mut request(), &state()).expect("decide");
    assert_eq!(decision.version.number, 1);
    let candidate = registry.shadow(&acme).expect("a shadow");
    assert!(
        candidate.version().instance_memory_bytes().is_some(),
        "a shadow has an instance ready before its first call"
    );
    candidate.version().decide(&mut request(), &state());
    assert!(candidate.version().instance_memory_bytes().is_some());

    // Cleared, it frees its warm instances; set again by number.
    assert_eq!(registry.clear_shadow(&acme).expect("clear").number, 2);
    assert!(registry.shadow(&acme).is_none());
    assert!(candidate.version().instance_memory_bytes().is_none());
    assert_eq!(registry.shadow_version(&acme, 2).expect("shadow again").number, 2);

    assert_eq!(registry.promote(&acme).expect("promote").number, 2);
    assert!(registry.shadow(&acme).is_none());
    let decision = registry.decide(&acme, &mut request(), &state()).expect("decide");
    assert_eq!(decision.version.number, 2);
    assert_eq!(registry.rollback(&acme).expect("rollback").number, 1);
}

#[test]
fn many_uploads_keep_only_the_active_and_shadow_versions_warm() {
    let registry = Registry::new(engine());
    let acme = tenant("acme");
    let (allow_all, budget_guard) = (wasm("allow-all"), wasm("budget-guard"));
    for i in 0..20 {
        let wasm = if i % 2 == 0 { &allow_all } else { &budget_guard };
        registry
            .register(&acme, wasm, relaxed(), "upload", None)
            .expect("register");
        registry.decide(&acme, &mut request(), &state()).expect("decide");
    }
    registry
        .set_shadow(&acme, &budget_guard, relaxed(), "candidate", None)
        .expect("shadow");
    registry
        .shadow(&acme)
        .expect("shadow")
        .version()
        .decide(&mut request(), &state());
    let versions = registry.versions(&acme);
    assert_eq!(versions.len(), tollgate_host::registry::KEEP_VERSIONS);
    let warm: Vec<u32> = versions
        .iter()
        .filter(|v| v.instance_memory_bytes().is_some())
        .map(|v| v.id().number)
        .collect();
    assert_eq!(warm, vec![20, 21], "only the active and the shadow are warm");
}

#[test]
fn idle_instances_never_hold_the_slots_other_tenants_calls_need() {
    // Four slots: idle instances, made ahead of calls or kept after them,
    // may hold two.
    let engine = tollgate_host::PolicyEngine::builder()
        .max_instances(4)
        .build()
        .expect("engine");
    let registry = Registry::new(engine);
    let tenants = ["t1", "t2", "t3", "t4", "t5", "t6"];
    for id in tenants {
        register(&registry, id, "allow-all", relaxed());
    }
    let warm = |id: &str| {
        registry
            .active(&tenant(id))
            .expect("active")
            .instance_memory_bytes()
            .is_some()
    };
    assert!(warm("t1") && warm("t2"), "the first versions are ready before any call");
    assert!(
        !warm("t3"),
        "with half the slots idle, a version never called takes no more"
    );
    // More tenants than slots: every call is decided, those past the line
    // on an instance made for the call. Before, each call kept its instance
    // idle, and the fifth tenant's call found no slot and failed.
    for round in 0..2 {
        for id in tenants {
            let decision = registry.decide(&tenant(id), &mut request(), &state()).expect("tenant");
            assert!(decision.failure.is_none(), "round {round}, {id}: {decision:?}");
            assert_eq!(decision.action, Action::Admit);
        }
    }
    let idle = tenants.iter().filter(|id| warm(id)).count();
    assert_eq!(idle, 2, "idle instances hold half the slots");
}

#[test]
fn a_versions_first_instance_rehearses_a_made_up_call_before_the_first_real_one() {
    // The counter keeps state across calls, which the contract forbids:
    // with `flip-after = 1` it rejects every call after its instance's
    // first. Its first real call is the instance's second decision: the
    // first was the rehearsal, made when the version was registered, so
    // that the first real call does not pay for the guest's first run.
    let registry = Registry::new(engine());
    let settings = PolicySettings {
        config: r#"{"flip-after": 1}"#.into(),
        ..relaxed()
    };
    register(&registry, "acme", "counter", settings);
    let decision = registry
        .decide(&tenant("acme"), &mut request(), &state())
        .expect("decide");
    assert!(decision.failure.is_none(), "{decision:?}");
    assert!(
        matches!(decision.action, Action::Reject(_)) && decision.reason.contains("served enough calls"),
        "{decision:?}"
    );
}

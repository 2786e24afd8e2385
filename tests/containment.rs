//! Hostile policies are contained: each one is stopped within its deadline
//! plus a margin, its tenant's failure mode applies, a well-behaved tenant
//! deciding at the same time is unaffected, and the process survives.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::*;
use tollgate_host::{Action, FailureKind, FailureMode, LoadError, PolicySettings, RegistryError, RejectKind};

/// Generous for a loaded 2-core CI machine; the deadline itself is 5 ms.
const MARGIN: Duration = Duration::from_millis(250);

fn contained(policy: &str, expected: FailureKind) {
    contained_component(policy, &wasm(policy), expected, PolicySettings::default());
}

/// Python and JavaScript runtimes start with more memory than a Rust
/// policy, so their tenants get a larger cap, which a bomb must still hit.
fn contained_guest(path: &str, engine: Option<&str>, expected: FailureKind) {
    let component = std::fs::read(guest_component(path, engine)).expect("read component");
    let settings = PolicySettings {
        memory_limit_mib: 48,
        ..PolicySettings::default()
    };
    contained_component(path, &component, expected, settings);
}

fn contained_component(policy: &str, component: &[u8], expected: FailureKind, base: PolicySettings) {
    let registry = Arc::new(tollgate_host::Registry::new(cached_engine()));
    // The good tenant's deadline is generous: this test runs many busy
    // threads on two cores, and the point is isolation, not CPU share.
    register(
        &registry,
        "good",
        "budget-guard",
        PolicySettings {
            deadline_ms: 200,
            ..PolicySettings::default()
        },
    );
    // Only the loop is meant to meet the deadline; the others must hit their
    // own limit first, even on a loaded machine, so they get more time.
    let deadline_ms = if expected == FailureKind::Timeout { 5 } else { 200 };
    let hostile = PolicySettings { deadline_ms, ..base };
    let open = PolicySettings {
        failure_mode: FailureMode::Open,
        ..hostile.clone()
    };
    for (tenant_id, settings) in [("closed", hostile), ("open", open)] {
        registry
            .register(&tenant(tenant_id), component, settings, policy, None)
            .unwrap_or_else(|e| panic!("register {policy} for {tenant_id}: {e}"));
    }

    // A well-behaved tenant decides continuously while the hostile one runs.
    let stop = Arc::new(AtomicBool::new(false));
    let good_decisions = Arc::new(AtomicU64::new(0));
    let good = {
        let (registry, stop, count) = (Arc::clone(&registry), Arc::clone(&stop), Arc::clone(&good_decisions));
        std::thread::spawn(move || {
            let tenant = tenant("good");
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) || count.load(Ordering::Relaxed) < 50 {
                let d = registry
                    .decide(&tenant, &mut request(), &state())
                    .expect("good tenant exists");
                if d.failure.is_some() || d.action != Action::Admit {
                    failures.push(format!("{:?}: {}", d.action, d.reason));
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };

    for round in 0..3 {
        let closed = registry
            .decide(&tenant("closed"), &mut request(), &state())
            .expect("tenant");
        let failure = closed
            .failure
            .as_ref()
            .unwrap_or_else(|| panic!("{policy} was not stopped: {closed:?}"));
        assert_eq!(failure.kind, expected, "{policy} round {round}: {failure}");
        assert_eq!(closed.action, Action::Reject(RejectKind::Denied), "fail-closed rejects");
        assert!(
            closed.reason.contains("closed@v1") && closed.reason.contains("failing closed"),
            "{}",
            closed.reason
        );
        assert!(
            closed.elapsed < Duration::from_millis(deadline_ms) + MARGIN,
            "{policy} took {:?} to stop",
            closed.elapsed
        );

        let open = registry
            .decide(&tenant("open"), &mut request(), &state())
            .expect("tenant");
        assert_eq!(open.failure.as_ref().map(|f| f.kind), Some(expected));
        assert_eq!(open.action, Action::Admit, "fail-open admits");
        assert!(
            open.metadata
                .contains(&("tollgate-policy-failure".into(), expected.as_str().into())),
            "fail-open flags the decision: {:?}",
            open.metadata
        );
    }

    stop.store(true, Ordering::Relaxed);
    let failures = good.join().expect("good tenant thread");
    assert!(failures.is_empty(), "the good tenant was affected: {failures:?}");
    assert!(good_decisions.load(Ordering::Relaxed) >= 50);
}

#[test]
fn an_infinite_loop_is_stopped_at_the_deadline() {
    contained("spin", FailureKind::Timeout);
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    contained("memory-bomb", FailureKind::MemoryLimit);
}

#[test]
fn a_python_infinite_loop_is_stopped_at_the_deadline() {
    contained_guest("python/hostile/spin", None, FailureKind::Timeout);
}

#[test]
fn a_python_memory_bomb_hits_the_memory_cap() {
    contained_guest("python/hostile/memory-bomb", None, FailureKind::MemoryLimit);
}

#[test]
fn javascript_infinite_loops_are_stopped_at_the_deadline() {
    for engine in ["quickjs", "starlingmonkey"] {
        contained_guest("js/hostile/spin", Some(engine), FailureKind::Timeout);
    }
}

#[test]
fn javascript_memory_bombs_hit_the_memory_cap() {
    for engine in ["quickjs", "starlingmonkey"] {
        contained_guest("js/hostile/memory-bomb", Some(engine), FailureKind::MemoryLimit);
    }
}

#[test]
fn a_trap_is_contained() {
    contained("trap", FailureKind::Trap);
}

#[test]
fn deep_recursion_overflows_the_stack_safely() {
    contained("deep-recursion", FailureKind::StackOverflow);
}

#[test]
fn huge_output_is_refused() {
    contained("huge-strings", FailureKind::OversizedOutput);
}

#[test]
fn a_forbidden_import_is_refused_at_load_naming_it() {
    let registry = tollgate_host::Registry::new(engine());
    let err = registry
        .register(
            &tenant("t"),
            &wasm("forbidden-import"),
            PolicySettings::default(),
            "x",
            None,
        )
        .unwrap_err();
    match &err {
        RegistryError::Load {
            source: LoadError::ForbiddenImport { name, .. },
            ..
        } => assert!(name.contains("evil:exfil/net"), "{name}"),
        other => panic!("expected a forbidden import, got {other}"),
    }
    assert!(err.to_string().contains("evil:exfil/net"), "{err}");
    assert!(registry.active(&tenant("t")).is_none(), "nothing was activated");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let err = engine().load(&wasm("wrong-world")).unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("no `decide` export") && text.contains("`run`"), "{text}");
}

#[test]
fn garbage_and_core_modules_are_refused_with_advice() {
    let engine = engine();
    let err = engine.load(b"definitely not wasm").unwrap_err().to_string();
    assert!(err.contains("not a WebAssembly file"), "{err}");
    let _ = components();
    let core = std::fs::read(repo().join("policies/target/wasm32-unknown-unknown/release/allow_all.wasm"))
        .expect("core module");
    let err = engine.load(&core).unwrap_err().to_string();
    assert!(
        err.contains("core WebAssembly module") && err.contains("tollgate policy build"),
        "{err}"
    );
}

/// An interpreter's heap grows over calls on a reused instance (here on
/// purpose, 256 KiB a call). The host retires an instance close to its cap
/// after its call, so that growth never turns into a failed decision.
#[test]
fn a_reused_instance_is_retired_before_it_reaches_its_memory_cap() {
    let component = std::fs::read(guest_component("python/hostile/leak", None)).expect("read component");
    let registry = tollgate_host::Registry::new(cached_engine());
    let settings = PolicySettings {
        deadline_ms: 200,
        // The default cap: about 12 MiB of it is CPython's own start-up heap.
        memory_limit_mib: 16,
        ..PolicySettings::default()
    };
    registry
        .register(&tenant("py"), &component, settings, "leak", None)
        .expect("register");
    let mut fresh_starts = 0;
    for call in 0..200 {
        let decision = registry
            .decide(&tenant("py"), &mut request(), &state())
            .expect("tenant");
        assert!(decision.failure.is_none(), "call {call}: {decision:?}");
        if decision.reason == "kept 1 blocks" {
            fresh_starts += 1;
        }
    }
    // 200 calls of 256 KiB cannot fit in one instance under 16 MiB.
    assert!(fresh_starts > 1, "the instance was never retired");
}

/// Settings of the `counter` policy, which flips after `flip_after` calls.
fn counter_settings(flip_after: u64) -> PolicySettings {
    PolicySettings {
        config: format!("{{\"flip-after\": {flip_after}}}"),
        deadline_ms: 200,
        ..PolicySettings::default()
    }
}

#[test]
fn a_policy_that_keeps_state_fails_its_cases_on_a_reused_instance() {
    let registry = tollgate_host::Registry::new(cached_engine());
    let cases = tollgate_host::registry::cases::CasesFile::parse(
        "[[case]]\nname = \"admits\"\nexpect = { action = \"admit\" }\n",
        "inline",
    )
    .expect("cases");
    // Each case passes on a fresh instance; the replay on one instance catches the drift.
    let err = registry
        .register(
            &tenant("stateful"),
            &wasm("counter"),
            counter_settings(50),
            "counter",
            Some(&cases),
        )
        .expect_err("a stateful policy is not activated");
    let text = err.to_string();
    assert!(matches!(err, RegistryError::CasesFailed { .. }), "{text}");
    assert!(
        text.contains("reused instance") && text.contains("after 50 earlier calls"),
        "{text}"
    );
    assert!(registry.active(&tenant("stateful")).is_none());
}

#[test]
fn pooled_instances_are_retired_before_kept_state_can_flip_a_verdict() {
    let registry = tollgate_host::Registry::new(cached_engine());
    // It would flip after 200 calls on one instance; no instance serves that many.
    registry
        .register(
            &tenant("stateful"),
            &wasm("counter"),
            counter_settings(200),
            "counter",
            None,
        )
        .expect("register");
    for call in 0..1000 {
        let decision = registry
            .decide(&tenant("stateful"), &mut request(), &state())
            .expect("tenant");
        assert_eq!(decision.action, Action::Admit, "call {call}: {}", decision.reason);
    }
}

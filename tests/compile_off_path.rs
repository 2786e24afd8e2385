//! Compiling a new policy version stays off the decision path: while a
//! large Python component compiles for a tenant, that tenant keeps deciding
//! on its current version, without waiting.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;
use tollgate_host::{Action, LoadOrigin, PolicySettings, Registry};

#[test]
fn decisions_keep_flowing_on_the_old_version_while_a_python_policy_compiles() {
    let python = std::fs::read(guest_component("python/examples/budget-guard", None)).expect("python build");
    // No cache directory and a new engine: the component really compiles.
    let registry = Arc::new(Registry::new(engine()));
    let acme = tenant("acme");
    register(
        &registry,
        "acme",
        "allow-all",
        PolicySettings {
            deadline_ms: 200,
            ..PolicySettings::default()
        },
    );

    let compiling = Arc::new(AtomicBool::new(true));
    let uploader = {
        let (registry, compiling, acme) = (Arc::clone(&registry), Arc::clone(&compiling), acme.clone());
        std::thread::spawn(move || {
            let settings = PolicySettings {
                deadline_ms: 200,
                memory_limit_mib: 64,
                ..PolicySettings::default()
            };
            let id = registry.register(&acme, &python, settings, "python", None);
            compiling.store(false, Ordering::Release);
            id.expect("python activates")
        })
    };

    let started = std::time::Instant::now();
    let mut during = 0u64;
    let mut slowest = Duration::ZERO;
    while compiling.load(Ordering::Acquire) {
        // Until `register` returns, the old version must answer.
        let start = std::time::Instant::now();
        let decision = registry.decide(&acme, &mut request(), &state()).expect("tenant");
        slowest = slowest.max(start.elapsed());
        assert!(decision.failure.is_none(), "{decision:?}");
        if decision.version.number != 1 {
            // Activated just now, in the moment before `register` returned.
            assert_eq!(decision.version.number, 2);
            break;
        }
        assert_eq!(decision.action, Action::Admit);
        during += 1;
    }
    let compiling_for = started.elapsed();
    let id = uploader.join().expect("uploader");
    assert_eq!(id.number, 2);
    let active = registry.active(&acme).expect("active");
    assert_eq!(active.component().origin(), LoadOrigin::Compiled);
    // Compiling 18 MB of Python takes seconds; thousands of decisions fit.
    assert!(during >= 100, "only {during} decisions while compiling");
    // A decision never waited for the compiler. On two cores shared with
    // the compiler's threads a decision can be descheduled for a while, but
    // one that waited for the compile would take about all of it.
    assert!(
        slowest * 4 < compiling_for,
        "a decision took {slowest:?} of the {compiling_for:?} compile"
    );
    let after = registry.decide(&acme, &mut request(), &state()).expect("tenant");
    assert_eq!(after.version.number, 2);
    assert!(after.reason.contains("budget"), "{}", after.reason);
}

#[test]
fn a_compiled_python_policy_loads_from_the_disk_cache_in_milliseconds() {
    let python = std::fs::read(guest_component("python/examples/budget-guard", None)).expect("python build");
    // Whichever test binary got here first compiled it into the shared cache.
    cached_engine().load(&python).expect("compiles or loads");
    // A restarted process: a new engine on the same cache directory.
    let engine = cached_engine();
    let start = std::time::Instant::now();
    let component = engine.load(&python).expect("loads");
    let took = start.elapsed();
    assert_eq!(component.origin(), LoadOrigin::DiskCache);
    // About 3 ms on an idle machine (benches/RESULTS.md); generous for CI.
    assert!(
        took < Duration::from_millis(250),
        "loading from the cache took {took:?}"
    );
}

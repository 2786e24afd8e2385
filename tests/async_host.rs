//! An async service (the gateway) may call `decide` from a Tokio task:
//! WASI policies must decide there too. wasmtime-wasi's synchronous
//! bindings enter a Tokio runtime themselves for blocking operations, which
//! would panic inside one, so this proves policies make no such call on the
//! decision path.

mod support;

use support::*;
use tollgate_host::{Action, PolicySettings, Registry};

#[test]
fn python_and_javascript_policies_decide_inside_a_tokio_task() {
    let registry = std::sync::Arc::new(Registry::new(cached_engine()));
    let settings = PolicySettings {
        deadline_ms: 200,
        memory_limit_mib: 64,
        ..PolicySettings::default()
    };
    for (tenant_id, path, engine) in [
        ("py", "python/examples/budget-guard", None),
        ("qjs", "js/examples/budget-guard", Some("quickjs")),
        ("sm", "js/examples/budget-guard", Some("starlingmonkey")),
    ] {
        let wasm = std::fs::read(guest_component(path, engine)).expect("component");
        registry
            .register(&tenant(tenant_id), &wasm, settings.clone(), path, None)
            .expect("register");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tasks: Vec<_> = ["py", "qjs", "sm"]
            .into_iter()
            .map(|id| {
                let registry = std::sync::Arc::clone(&registry);
                tokio::spawn(async move {
                    // Fresh instances included: the first calls instantiate.
                    for _ in 0..20 {
                        let d = registry.decide(&tenant(id), &mut request(), &state()).expect("tenant");
                        assert!(d.failure.is_none(), "{id}: {d:?}");
                        assert_eq!(d.action, Action::Admit, "{id}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a decision panicked inside the runtime");
        }
    });
}

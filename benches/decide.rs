//! Decision latency: what a policy call costs, from the floor up.
//!
//! - `native/budget-guard`: the budget-guard logic compiled natively, the
//!   baseline no Wasm policy can beat;
//! - `instantiate/allow-all`: creating an instance alone (the floor of the
//!   fresh strategy);
//! - `pooled/allow-all`: the smallest policy on a reused instance (the floor
//!   of a Wasm call: lowering the request and state, lifting the verdict);
//! - `pooled/budget-guard` and `fresh/budget-guard`: a real policy under
//!   each instance strategy;
//! - `pooled/budget-guard-py`, `-js-quickjs`, `-js-starlingmonkey`: the same
//!   policy written in Python and JavaScript, when their components have
//!   been built (the integration tests build them into
//!   `target/guest-components`); otherwise they are skipped with a note, so
//!   the bench needs no Python or JavaScript toolchain.
//!
//! Run: `cargo bench --bench decide`. Results: `benches/RESULTS.md`.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate_host::{
    Action, AlertLevel, InstanceStrategy, PolicyEngine, PolicySettings, PolicyVersion, RejectKind, Request, TenantId,
    TenantState, Verdict,
};

fn components() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = repo.join("policies/target/components");
    let status = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["policy", "build"])
        .arg(repo.join("policies"))
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run tollgate policy build");
    assert!(status.success(), "building the policies failed");
    out
}

fn request() -> Request {
    Request {
        request_id: "bench-0001".into(),
        tenant_id: "acme".into(),
        user_id: "user-42".into(),
        use_case: "chat".into(),
        model_id: "us.anthropic.claude-sonnet-4-20250514-v1:0".into(),
        base_model_id: "anthropic.claude-sonnet-4-20250514-v1:0".into(),
        estimated_input_tokens: 1200,
        max_output_tokens: 1000,
        worst_case_cost: 18_600_000,
        metadata: vec![("user".into(), "user-42".into()), ("feature".into(), "chat".into())],
        now_ms: 1_768_435_200_000,
        ..Request::default()
    }
}

fn state() -> TenantState {
    let mut state = TenantState::default();
    state.plan.tier = "pro".into();
    state.budget.limit = 100_000_000_000;
    state.budget.spent = 50_000_000_000;
    state.budget.period_start_ms = 1_767_225_600_000;
    state.budget.period_end_ms = 1_769_904_000_000;
    state.window.tpm_limit = Some(1_000_000);
    state
}

/// budget-guard's logic, natively, with its default parameters.
fn native_budget_guard(req: &Request, state: &TenantState) -> Verdict {
    const CHAIN: [&str; 3] = [
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "amazon.nova-micro-v1:0",
    ];
    let b = &state.budget;
    let committed = b.spent.saturating_add(b.reserved);
    let verdict = |action, reason: String| Verdict {
        action,
        reason,
        metadata: vec![],
        max_output_tokens: None,
    };
    if committed >= b.limit {
        return verdict(
            Action::Reject(RejectKind::BudgetExhausted),
            format!("budget exhausted: {committed} of {}", b.limit),
        );
    }
    if let Some(tpm) = state.window.tpm_limit
        && state.window.tokens + req.estimated_input_tokens + req.max_output_tokens > tpm
    {
        return verdict(Action::Throttle(60_000 - req.now_ms % 60_000), "tpm".into());
    }
    let with_call = committed.saturating_add(req.worst_case_cost);
    let percent = u128::from(with_call) * 100 / u128::from(b.limit.max(1));
    if percent >= 80 || state.alert >= AlertLevel::Orange {
        let next = CHAIN.iter().position(|m| *m == req.base_model_id).map_or(0, |i| i + 1);
        if let Some(model) = CHAIN.get(next) {
            return verdict(Action::Downgrade((*model).into()), format!("{percent}% of budget"));
        }
    }
    verdict(Action::Admit, format!("{percent}% of the budget used"))
}

fn version(engine: &PolicyEngine, file: &std::path::Path, strategy: InstanceStrategy) -> PolicyVersion {
    let component = engine.load_file(file).expect("load");
    let settings = PolicySettings {
        instances: strategy,
        deadline_ms: 100,
        ..PolicySettings::default()
    };
    PolicyVersion::build(
        engine,
        component,
        TenantId::new("acme").expect("id"),
        1,
        settings,
        "bench".into(),
    )
    .expect("version")
}

fn decide(c: &mut Criterion) {
    let dir = components();
    let engine = PolicyEngine::builder().max_instances(64).build().expect("engine");
    let pooled = InstanceStrategy::Pooled { max_idle: 4 };
    let allow_pooled = version(&engine, &dir.join("allow_all.wasm"), pooled);
    let allow_fresh = version(&engine, &dir.join("allow_all.wasm"), InstanceStrategy::Fresh);
    let guard_pooled = version(&engine, &dir.join("budget_guard.wasm"), pooled);
    let guard_fresh = version(&engine, &dir.join("budget_guard.wasm"), InstanceStrategy::Fresh);
    let state = state();

    let mut group = c.benchmark_group("decide");
    group.bench_function("native/budget-guard", |b| {
        let req = request();
        b.iter(|| black_box(native_budget_guard(black_box(&req), black_box(&state))))
    });
    group.bench_function("instantiate/allow-all", |b| {
        b.iter(|| allow_fresh.instantiate_for_bench())
    });
    for (name, version) in [
        ("pooled/allow-all", &allow_pooled),
        ("fresh/allow-all", &allow_fresh),
        ("pooled/budget-guard", &guard_pooled),
        ("fresh/budget-guard", &guard_fresh),
    ] {
        let mut req = request();
        let first = version.decide(&mut req, &state);
        assert!(first.failure.is_none(), "{name}: {}", first.reason);
        group.bench_function(name, |b| {
            b.iter(|| black_box(version.decide(&mut req, black_box(&state))))
        });
    }
    for (name, path) in guest_components() {
        let Some(file) = path else {
            eprintln!(
                "skipping {name}: its component is not built (run `cargo test --release --test conformance` first)"
            );
            continue;
        };
        let guest = PolicySettings {
            instances: pooled,
            deadline_ms: 100,
            memory_limit_mib: 64,
            ..PolicySettings::default()
        };
        let component = engine.load_file(&file).expect("load");
        let version = PolicyVersion::build(
            &engine,
            component,
            TenantId::new("acme").expect("id"),
            1,
            guest,
            name.into(),
        )
        .expect("version");
        let mut req = request();
        let first = version.decide(&mut req, &state);
        assert!(first.failure.is_none(), "{name}: {}", first.reason);
        group.bench_function(name, |b| {
            b.iter(|| black_box(version.decide(&mut req, black_box(&state))))
        });
    }
    group.finish();
}

/// The Python and JavaScript builds of budget-guard, where the tests left them.
fn guest_components() -> Vec<(&'static str, Option<PathBuf>)> {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/guest-components");
    [
        (
            "pooled/budget-guard-py",
            "python-examples-budget-guard-default/budget_guard_py.wasm",
        ),
        (
            "pooled/budget-guard-js-quickjs",
            "js-examples-budget-guard-quickjs/budget_guard_js.wasm",
        ),
        (
            "pooled/budget-guard-js-starlingmonkey",
            "js-examples-budget-guard-starlingmonkey/budget_guard_js.wasm",
        ),
    ]
    .into_iter()
    .map(|(name, file)| (name, Some(built.join(file)).filter(|p| p.exists())))
    .collect()
}

criterion_group!(benches, decide);
criterion_main!(benches);

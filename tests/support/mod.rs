//! Shared by the integration tests: builds the policy components from source
//! once per test process, with the real `tollgate policy build`.

#![allow(dead_code)]

pub mod gateway;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tollgate_host::{PolicyEngine, PolicySettings, Registry, Request, TenantId, TenantState};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// Directory holding every built policy component (`<name>.wasm`).
pub fn components() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = repo().join("policies/target/components");
        let output = tollgate()
            .args(["policy", "build"])
            .arg(repo().join("policies"))
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run tollgate policy build");
        assert!(
            output.status.success(),
            "building the policies failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out
    })
}

/// Path of a built component, by crate name (`budget-guard`).
pub fn component(name: &str) -> PathBuf {
    let path = components().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

pub fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(component(name)).expect("read component")
}

pub fn example_cases(name: &str) -> PathBuf {
    repo().join("policies/examples").join(name).join("cases.toml")
}

pub fn engine() -> PolicyEngine {
    PolicyEngine::builder().max_instances(128).build().expect("engine")
}

pub fn tenant(id: &str) -> TenantId {
    TenantId::new(id).expect("tenant id")
}

/// Registers `policy` for `tenant` with default settings but `settings`.
pub fn register(registry: &Registry, tenant_id: &str, policy: &str, settings: PolicySettings) {
    registry
        .register(&tenant(tenant_id), &wasm(policy), settings, policy, None)
        .unwrap_or_else(|e| panic!("register {policy} for {tenant_id}: {e}"));
}

pub fn request() -> Request {
    Request {
        request_id: "req-1".into(),
        user_id: "user-1".into(),
        use_case: "chat".into(),
        model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        base_model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        estimated_input_tokens: 1000,
        max_output_tokens: 1000,
        worst_case_cost: 4_800_000,
        now_ms: 1_767_225_600_000,
        ..Request::default()
    }
}

/// A tenant a tenth of the way through a $100 monthly budget.
pub fn state() -> TenantState {
    let mut state = TenantState::default();
    state.plan.tier = "pro".into();
    state.budget.limit = 100_000_000_000;
    state.budget.spent = 10_000_000_000;
    state.budget.period_start_ms = 1_767_225_600_000;
    state.budget.period_end_ms = 1_769_904_000_000;
    state
}

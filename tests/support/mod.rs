//! Shared by the integration tests: builds the policy components from source
//! once per test process, with the real `tollgate policy build`.

#![allow(dead_code)]

pub mod chromium;
pub mod gateway;
pub mod redis;
pub mod upstream;
pub mod watch;

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

/// The cases of an example; budget-guard's are the conformance suite that
/// every language's port must pass.
pub fn example_cases(name: &str) -> PathBuf {
    if name == "budget-guard" {
        return conformance_cases("budget-guard");
    }
    repo().join("policies/examples").join(name).join("cases.toml")
}

/// A conformance cases file: the behaviour every language's port must show.
pub fn conformance_cases(name: &str) -> PathBuf {
    repo().join("policies/conformance").join(format!("{name}.cases.toml"))
}

pub fn engine() -> PolicyEngine {
    PolicyEngine::builder().max_instances(128).build().expect("engine")
}

/// An engine with an on-disk artifact cache shared by the test binaries, so
/// an 18 MB Python component is compiled once, not once per test.
pub fn cached_engine() -> PolicyEngine {
    PolicyEngine::builder()
        .max_instances(128)
        .cache_dir(repo().join("target/policy-cache"))
        .build()
        .expect("engine")
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

/// The Python, JavaScript and C policy toolchains, installed once into the
/// repository's `.tools` by `policies/toolchain/install.sh` (a no-op when
/// they are already there; the script serialises parallel runs).
pub fn guest_tools() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join(".tools");
        let output = Command::new("sh")
            .arg(repo().join("policies/toolchain/install.sh"))
            .arg(&dir)
            .output()
            .expect("run policies/toolchain/install.sh");
        assert!(
            output.status.success(),
            "installing the policy toolchains failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        dir
    })
}

/// A Python, JavaScript or C policy built from `policies/<path>` with the real
/// `tollgate policy build` (`engine`: the JavaScript engine, or None). The
/// component is rebuilt only when its inputs change, so the test binaries
/// that share it build it once; a file lock keeps them from racing.
pub fn guest_component(path: &str, engine: Option<&str>) -> PathBuf {
    let tools = guest_tools();
    let dir = repo().join("policies").join(path);
    let flavour = engine.unwrap_or("default");
    let out = repo()
        .join("target/guest-components")
        .join(format!("{}-{flavour}", path.replace('/', "-")));
    std::fs::create_dir_all(&out).expect("create the output directory");
    let lock = std::fs::File::create(out.join(".lock")).expect("create the lock file");
    lock.lock().expect("lock the output directory");

    let stamp = inputs_stamp(&dir, tools, flavour);
    let stamp_file = out.join(".stamp");
    let built = std::fs::read_dir(&out)
        .expect("list the output directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wasm"));
    if let Some(built) = &built
        && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str())
    {
        return built.clone();
    }
    let mut command = tollgate();
    command
        .args(["policy", "build"])
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .arg("--tools")
        .arg(tools);
    if let Some(engine) = engine {
        command.args(["--js-engine", engine]);
    }
    let output = command.output().expect("run tollgate policy build");
    assert!(
        output.status.success(),
        "building {path} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let built = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(built.exists(), "{} was not built", built.display());
    std::fs::write(&stamp_file, stamp).expect("write the stamp");
    built
}

/// What a guest build depends on: its sources, the helper modules and the
/// contract (which the tollgate binary embeds), the build steps and the
/// installed toolchain.
fn inputs_stamp(dir: &Path, tools: &Path, flavour: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    flavour.hash(&mut hasher);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the policy directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.extend([
        repo().join("policies/python/tollgate_policy.py"),
        repo().join("policies/js/tollgate-policy.js"),
        repo().join("policies/c/tollgate_policy.h"),
        repo().join("policies/c/tollgate_policy.c"),
        repo().join("wit/policy.wit"),
        tools.join("python-venv/.installed"),
        tools.join("npm/.installed"),
        repo().join("src/policy_build_py.rs"),
        repo().join("src/policy_build_js.rs"),
        repo().join("src/policy_build_c.rs"),
        repo().join("src/policy_guest.rs"),
    ]);
    files.sort();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

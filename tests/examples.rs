//! The example policies, built from source, pass their cases through the
//! real host, both through the registry and through `tollgate policy test`.

mod support;

use support::*;
use tollgate_host::registry::cases::{self, CasesFile};
use tollgate_host::{PolicySettings, PolicyVersion, Registry};

const EXAMPLES: [&str; 3] = ["budget-guard", "tiered", "forecast-guard"];

#[test]
fn every_example_passes_its_cases_in_the_host() {
    let engine = engine();
    for name in EXAMPLES {
        let cases = CasesFile::load(&example_cases(name)).expect("cases parse");
        assert!(cases.cases.len() >= 5, "{name} has too few cases");
        let component = engine.load(&wasm(name)).expect("loads");
        let version = PolicyVersion::build(
            &engine,
            component,
            tenant("t"),
            1,
            PolicySettings::default(),
            name.into(),
        )
        .expect("default config is valid");
        let outcomes = cases::run(&version, &cases);
        let failures: Vec<String> = outcomes.iter().filter(|o| !o.passed()).map(|o| o.to_string()).collect();
        assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
    }
}

#[test]
fn bundled_cases_gate_activation() {
    let registry = Registry::new(engine());
    for name in EXAMPLES {
        let cases = CasesFile::load(&example_cases(name)).expect("cases");
        let id = registry
            .register(
                &tenant(name),
                &wasm(name),
                PolicySettings::default(),
                name,
                Some(&cases),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.number, 1);
    }
    assert_eq!(registry.tenants().len(), 3);
}

#[test]
fn policy_test_cli_passes_examples_and_shows_a_diff_on_mismatch() {
    for name in EXAMPLES {
        let out = tollgate()
            .args(["policy", "test"])
            .arg(component(name))
            .arg(example_cases(name))
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    }

    let dir = tempdir();
    let wrong = dir.join("wrong.toml");
    std::fs::write(
        &wrong,
        "[[case]]\nname = \"should reject\"\nstate.budget.spent = 1\nexpect = { action = \"reject\", reject = \"denied\" }\n",
    )
    .expect("write");
    let out = tollgate()
        .args(["policy", "test"])
        .arg(component("allow-all"))
        .arg(&wrong)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("FAIL should reject"), "{stdout}");
    assert!(
        stdout.contains("- action: reject") && stdout.contains("+ action: admit"),
        "{stdout}"
    );
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn policy_test_cli_reports_a_typo_in_a_cases_file() {
    let dir = tempdir();
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        "[[case]]\nname = \"typo\"\n[case.state.budget]\nspnt = 5\n[case.expect]\naction = \"admit\"\n",
    )
    .expect("write");
    let out = tollgate()
        .args(["policy", "test"])
        .arg(component("allow-all"))
        .arg(&typo)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("case #1 \"typo\"") && stderr.contains("state.budget.spnt") && stderr.contains("spent"),
        "{stderr}"
    );
}

#[test]
fn policy_check_cli_describes_a_policy_and_refuses_others() {
    let out = tollgate()
        .args(["policy", "check"])
        .arg(component("budget-guard"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("decide (function)") && stdout.contains("validate-config (function)"),
        "{stdout}"
    );
    assert!(stdout.contains("tollgate:policy/host@0.2.0"), "{stdout}");
    assert!(stdout.contains("ok, a tollgate:policy@0.2.0 policy"), "{stdout}");

    // A component built against 0.1.0 is still accepted, and said to be older.
    let out = tollgate()
        .args(["policy", "check"])
        .arg(contract_0_1_fixture())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok, a tollgate:policy@0.1.0 policy (an older contract, still supported"),
        "{stdout}"
    );

    let dir = tempdir();
    let text = dir.join("not.wasm");
    std::fs::write(&text, "hello").expect("write");
    for (file, needle) in [
        (text, "not a WebAssembly file"),
        (
            component("wrong-world"),
            "does not implement the tollgate:policy `policy` world (0.1.0 or 0.2.0)",
        ),
        (component("forbidden-import"), "imports `evil:exfil/net"),
    ] {
        let out = tollgate().args(["policy", "check"]).arg(&file).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{} passed the check", file.display());
        assert!(stderr.contains(needle), "{}: {stderr}", file.display());
    }
}

#[test]
fn policy_bench_cli_reports_rate_and_percentiles() {
    let out = tollgate()
        .args(["policy", "bench", "--seconds", "0.3"])
        .arg(component("budget-guard"))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("decisions/s") && stdout.contains("p99"), "{stdout}");
}

/// A scratch directory, removed when the test is done with it.
struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("tollgate-test-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    TempDir(dir)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// budget-guard as built against contract 0.1.0, before 0.2.0 existed.
fn contract_0_1_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contract-0.1.0/budget_guard.wasm")
}

//! Every program in `host/examples/` runs and does what it says. `cargo
//! test` builds them; this runs them against policies built from source.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{component, components};

/// `target/<profile>/examples/<name>`, beside this test's own binary.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target dir");
    let path: PathBuf = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test --workspace` builds host/examples",
        path.display()
    );
    Command::new(path)
}

fn run(mut command: Command) -> String {
    let output = command.output().expect("run the example");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn deciding_in_process() {
    let mut command = example("decide_in_process");
    command.arg(component("budget-guard"));
    let out = run(command);
    assert!(out.contains("Admit by acme@v1"), "{out}");
}

#[test]
fn the_readme_snippet_is_the_example() {
    let readme = std::fs::read_to_string(support::repo().join("README.md")).expect("README");
    let example = std::fs::read_to_string(support::repo().join("host/examples/decide_in_process.rs")).expect("example");
    let start =
        example.find("// README: embed the engine\n").expect("start marker") + "// README: embed the engine\n".len();
    let end = example.find("    // README: end").expect("end marker");
    let snippet: String = example[start..end]
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let readme_code: String = readme.lines().map(|l| format!("{}\n", l.trim_start())).collect();
    assert!(
        readme_code.contains(&snippet),
        "README's embedding snippet differs from the example:\n{snippet}"
    );
}

#[test]
fn the_sdk_interceptor() {
    let mut command = example("sdk_interceptor");
    command.arg(component("budget-guard"));
    let out = run(command);
    assert!(out.contains("acme: answered"), "{out}");
    assert!(out.contains("initech: refused: ThrottlingException"), "{out}");
    assert!(
        out.contains("umbrella: refused: ServiceQuotaExceededException"),
        "{out}"
    );
}

#[test]
fn a_custom_ledger_store() {
    let out = run(example("custom_ledger_store"));
    assert!(out.contains("billing feed: [Charge"), "{out}");
}

#[test]
fn a_policy_directory_with_reload() {
    let mut command = example("policy_directory");
    command.arg(components());
    let out = run(command);
    assert!(
        out.contains("acme: Admit by acme@v1") || out.contains("acme: admit by acme@v1"),
        "{out}"
    );
    assert!(out.contains("refused:"), "{out}");
    assert!(out.contains("acme still:"), "{out}");
    assert!(out.contains("after rollback:"), "{out}");
}

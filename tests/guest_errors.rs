//! A policy that fails says why in its own words: a Rust panic's message, a
//! Python traceback, a JavaScript exception with its stack. The host keeps
//! what the guest wrote to stdout and stderr during the call (bounded and
//! escaped) and the call's last error log, and adds them to the failure, so
//! they reach `tollgate policy test`, the gateway's log and the invocation
//! record. The tenant's failure mode still decides.

mod support;

use tollgate_host::{FailureKind, PolicySettings};

use support::gateway::{Options, TenantSpec, TestGateway, timed_call};
use support::{cached_engine, guest_component, repo, request, state, tenant, tollgate, wasm};

/// The failure detail of one decision by `component`.
fn failure_of(name: &str, component: &[u8]) -> String {
    let registry = tollgate_host::Registry::new(cached_engine());
    let settings = PolicySettings {
        // Interpreters start slower than Rust on a loaded machine.
        deadline_ms: 500,
        memory_limit_mib: 48,
        ..PolicySettings::default()
    };
    registry
        .register(&tenant("acme"), component, settings, name, None)
        .unwrap_or_else(|e| panic!("register {name}: {e}"));
    let decision = registry
        .decide(&tenant("acme"), &mut request(), &state())
        .expect("the tenant exists");
    let Some(failure) = decision.failure else {
        panic!(
            "{name} decided without failing: {:?} {}",
            decision.action, decision.reason
        );
    };
    assert_eq!(failure.kind, FailureKind::Trap, "{failure}");
    failure.to_string()
}

fn assert_one_line(text: &str) {
    assert!(!text.chars().any(char::is_control), "escaped, one line: {text:?}");
}

#[test]
fn a_rust_panic_shows_its_message_and_place() {
    let failure = failure_of("trap", &wasm("trap"));
    assert!(
        failure.contains("panicked at") && failure.contains("src/lib.rs"),
        "{failure}"
    );
    assert!(failure.contains("policy bug: index"), "{failure}");
    assert_one_line(&failure);
}

#[test]
fn a_python_exception_shows_its_traceback() {
    let component = std::fs::read(guest_component("python/hostile/raises", None)).expect("read component");
    let failure = failure_of("raises", &component);
    assert!(failure.contains("Traceback"), "{failure}");
    assert!(failure.contains("ZeroDivisionError"), "{failure}");
    assert!(failure.contains("budget_share"), "the frame that raised: {failure}");
    assert_one_line(&failure);
}

#[test]
fn a_javascript_exception_shows_its_message_and_stack() {
    for engine in ["quickjs", "starlingmonkey"] {
        let component = std::fs::read(guest_component("js/hostile/throws", Some(engine))).expect("read component");
        let failure = failure_of("throws", &component);
        assert!(failure.contains("no budget share for"), "{engine}: {failure}");
        assert!(
            failure.contains("budgetShare"),
            "{engine}: the function that threw: {failure}"
        );
        assert_one_line(&failure);
    }
}

#[test]
fn policy_test_prints_the_traceback() {
    let component = guest_component("python/hostile/raises", None);
    let output = tollgate()
        .args(["policy", "test"])
        .arg(&component)
        .arg(repo().join("policies/conformance/budget-guard.cases.toml"))
        .output()
        .expect("run tollgate policy test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "every case fails: {stdout}");
    assert!(
        stdout.contains("Traceback") && stdout.contains("ZeroDivisionError"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_logs_and_records_the_panic_message() {
    let broken = TenantSpec::new("broken", "trap");
    let gw = TestGateway::start(Options {
        tenants: vec![broken.clone()],
        ..Options::default()
    })
    .await;
    // The failure mode decides (closed by default: a 503); no 5xx comes from the policy's text.
    let outcome = timed_call(&gw.bearer_client(&broken)).await;
    let records = gw.wait_for_records(1).await;
    let failure = records[0]
        .tollgate
        .policy_failure
        .clone()
        .unwrap_or_else(|| panic!("the record names the failure: {outcome:?} {:?}", records[0]));
    assert!(failure.contains("policy bug: index"), "{failure}");
    assert_one_line(&failure);
    let log = std::fs::read_to_string(gw.dir().join("stderr.log")).expect("the gateway's log");
    let line = log
        .lines()
        .find(|l| l.contains("policy failed"))
        .unwrap_or_else(|| panic!("no failure line in the log:\n{log}"));
    assert!(
        line.contains("panicked at") && line.contains("policy bug: index"),
        "{line}"
    );
}

//! Loading tenants' policies from a directory at start: good files load and
//! decide, each bad file is reported with its path and what is wrong, and one
//! bad file does not keep the others from loading.

mod support;

use support::*;
use tollgate_host::{Action, Registry, RejectKind, registry::policy_dir};

#[test]
fn a_policy_directory_loads_each_tenant_and_reports_each_bad_file() {
    let dir = std::env::temp_dir().join(format!("tollgate-policy-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(component("budget-guard"), dir.join("budget_guard.wasm")).expect("copy");
    std::fs::copy(example_cases("budget-guard"), dir.join("budget-guard.cases.toml")).expect("copy");
    std::fs::write(
        dir.join("acme.toml"),
        "policy = \"budget_guard.wasm\"\ncases = \"budget-guard.cases.toml\"\nfailure-mode = \"open\"\n\
         deadline-ms = 20\n[config]\ndowngrade-at-percent = 80\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("globex.toml"),
        "policy = \"budget_guard.wasm\"\ndeadlin-ms = 5\n",
    )
    .expect("write");
    std::fs::write(dir.join("initech.toml"), "policy = \"missing.wasm\"\n").expect("write");
    std::fs::write(
        dir.join("hooli.toml"),
        "policy = \"budget_guard.wasm\"\n[config]\ndowngrade-at-percent = 250\n",
    )
    .expect("write");

    let registry = Registry::new(engine());
    let (loaded, errors) = policy_dir::load(&registry, &dir);
    assert_eq!(
        loaded.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        ["acme@v1"],
        "{errors:?}"
    );
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let about = |tenant: &str| {
        messages
            .iter()
            .find(|m| m.contains(&format!("{tenant}.toml")))
            .unwrap_or_else(|| panic!("no error for {tenant}: {messages:#?}"))
            .clone()
    };
    assert!(about("globex").contains("deadlin-ms"), "{}", about("globex"));
    assert!(about("initech").contains("missing.wasm"), "{}", about("initech"));
    assert!(about("hooli").contains("downgrade-at-percent"), "{}", about("hooli"));

    let mut spent = state();
    spent.budget.spent = spent.budget.limit;
    let decision = registry.decide(&tenant("acme"), &mut request(), &spent).expect("acme");
    assert_eq!(decision.action, Action::Reject(RejectKind::BudgetExhausted));
    let _ = std::fs::remove_dir_all(&dir);
}

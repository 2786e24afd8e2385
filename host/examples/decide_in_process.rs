//! Deciding in process: load a tenant's policy into a registry and ask it
//! for a verdict. This is the README's "Embed the engine" snippet; it needs
//! only `tollgate-host` with `default-features = false`.
//!
//! ```sh
//! cargo run --release -- policy build policies
//! cargo run -p tollgate-host --example decide_in_process -- policies/target/components/budget_guard.wasm
//! ```

use tollgate_host::{PolicyEngine, PolicySettings, Registry, Request, TenantId, TenantState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let wasm_path = std::env::args().nth(1).unwrap_or_else(|| "budget_guard.wasm".into());
    let cache_dir = std::env::temp_dir().join("tollgate-example-cache");

    // README: embed the engine
    let registry = Registry::new(PolicyEngine::builder().cache_dir(&cache_dir).build()?);
    let acme = TenantId::new("acme")?;
    registry.register(
        &acme,
        &std::fs::read(&wasm_path)?,
        PolicySettings::default(),
        "budget-guard",
        None,
    )?;
    let mut request = Request {
        model_id: "amazon.nova-micro-v1:0".into(),
        ..Default::default()
    };
    let decision = registry.decide(&acme, &mut request, &TenantState::default())?;
    println!(
        "{:?} by {} in {:?}: {}",
        decision.action, decision.version, decision.elapsed, decision.reason
    );
    // README: end

    Ok(())
}

//! Loading tenants' policies from a directory, and reloading it: one
//! `<tenant>.toml` per tenant beside the components it names. A reload
//! validates each changed file (world, imports, `validate-config`, bundled
//! cases) before it replaces the running version; decisions in flight
//! finish on the version they started with, and a bad file changes nothing.
//!
//! ```sh
//! cargo run --release -- policy build policies
//! cargo run -p tollgate-host --example policy_directory -- policies/target/components
//! ```

use std::path::PathBuf;

use tollgate_host::registry::policy_dir;
use tollgate_host::{PolicyEngine, Registry, Request, TenantId, TenantState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let components = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "policies/target/components".into()),
    );
    let dir = std::env::temp_dir().join(format!("tollgate-example-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for name in ["allow_all.wasm", "budget_guard.wasm"] {
        std::fs::copy(components.join(name), dir.join(name))?;
    }
    let registry = Registry::new(PolicyEngine::builder().build()?);
    let acme = TenantId::new("acme")?;
    let decide = |registry: &Registry| -> Result<String, Box<dyn std::error::Error>> {
        let mut request = Request {
            model_id: "amazon.nova-micro-v1:0".into(),
            ..Default::default()
        };
        let decision = registry.decide(&acme, &mut request, &TenantState::default())?;
        Ok(format!("{} by {}", decision.action.name(), decision.version))
    };

    // Start: acme runs allow-all.
    std::fs::write(dir.join("acme.toml"), "policy = \"allow_all.wasm\"\n")?;
    let (loaded, errors) = policy_dir::load(&registry, &dir);
    println!("loaded {loaded:?}, errors {errors:?}");
    println!("acme: {}", decide(&registry)?);

    // An edit that names a missing component: reported, nothing changes.
    std::fs::write(dir.join("acme.toml"), "policy = \"missing.wasm\"\n")?;
    let (_, errors) = policy_dir::load(&registry, &dir);
    for error in &errors {
        println!("refused: {error}");
    }
    println!("acme still: {}", decide(&registry)?);

    // A good edit: budget-guard with parameters becomes active.
    std::fs::write(
        dir.join("acme.toml"),
        "policy = \"budget_guard.wasm\"\n[config]\ndowngrade-at-percent = 50\n",
    )?;
    let (loaded, errors) = policy_dir::load(&registry, &dir);
    println!("reloaded {loaded:?}, errors {errors:?}");
    println!("acme now: {}", decide(&registry)?);

    // And back, in one call.
    registry.rollback(&acme)?;
    println!("after rollback: {}", decide(&registry)?);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

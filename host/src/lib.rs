//! # tollgate-host
//!
//! The embeddable tollgate policy engine. A tenant's cost policy is a
//! WebAssembly component (world `tollgate:policy/policy@0.1.0`, see `wit/`);
//! for every Bedrock call the host hands it the request and the tenant's
//! budget state and enforces the verdict: admit, downgrade, throttle or
//! reject.
//!
//! ```no_run
//! use tollgate_host::{PolicyEngine, PolicySettings, Registry, Request, TenantId, TenantState};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = PolicyEngine::builder().cache_dir("/var/cache/tollgate").build()?;
//! let registry = Registry::new(engine);
//! let tenant = TenantId::new("acme")?;
//! let wasm = std::fs::read("budget_guard.wasm")?;
//! registry.register(&tenant, &wasm, PolicySettings::default(), "budget_guard.wasm", None)?;
//!
//! let mut request = Request { model_id: "amazon.nova-micro-v1:0".into(), ..Default::default() };
//! let decision = registry.decide(&tenant, &mut request, &TenantState::default())?;
//! println!("{} by {} in {:?}: {}", decision.action.name(), decision.version, decision.elapsed, decision.reason);
//! # Ok(()) }
//! ```
//!
//! Modules, one concept each: [`engine`] (wasmtime, compiling, caching),
//! [`component`] (a checked component), [`sandbox`] (what a policy may use),
//! [`instances`] (running a call), [`version`] (a tenant's policy version),
//! [`registry`] (tenant → active version, hot swap, rollback), [`decision`]
//! (verdicts and failure modes), [`cases`] (table-driven policy tests),
//! [`policy_dir`] (loading tenants' policies from a directory), [`wasi`]
//! (the deny-everything WASI of Python and JavaScript policies).
//!
//! The budget brain: [`pricing`] (the Bedrock price catalog and cost),
//! [`estimate`] (input tokens before the call, self-calibrating),
//! [`ledger`] (reserve, settle, release; in-memory and durable stores),
//! [`alerts`] (burn rates, forecast, alert levels, webhooks) and
//! [`accounting`] (ledger and alerts together; builds `tenant-state`).

pub mod accounting;
pub mod alerts;
pub mod artifact_cache;
pub mod cases;
pub mod component;
pub mod config;
pub mod contract;
pub mod decision;
pub mod engine;
pub mod epoch_ticker;
pub mod estimate;
pub mod gateway;
pub mod ids;
pub mod instances;
pub mod ledger;
pub mod money;
pub mod policy_dir;
pub mod pricing;
pub mod registry;
pub mod sandbox;
pub mod upstream;
pub mod version;
pub mod wasi;

pub use component::{LoadOrigin, PolicyComponent};
pub use contract::{
    Action, AlertLevel, Budget, Indicators, ModelPrice, Operation, Period, Plan, RateWindow, RejectKind, Request,
    TenantState, Verdict,
};
pub use decision::{Decision, FailureKind, FailureMode, PolicyFailure};
pub use engine::{EngineSettings, LoadError, PolicyEngine};
pub use estimate::{Estimate, Estimator};
pub use ids::{ModelId, TenantId};
pub use instances::InstanceStrategy;
pub use money::NanoUsd;
pub use pricing::{Catalog, CatalogError, Price, PriceBook, StaticPrices, UnknownModel, Usage};
pub use registry::{Registry, RegistryError};

pub use version::{PolicySettings, PolicyVersion, PolicyVersionId};

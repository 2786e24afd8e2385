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
//! The tree is the architecture; dependencies point down this list:
//!
//! - `gateway` (feature `gateway`): the request pipeline, the reservation
//!   guard, the stream pump, auth, HTTP, the admin API, the invocation log.
//!   [`sdk`] (feature `sdk`) runs the same pipeline inside an
//!   `aws-sdk-bedrockruntime` client.
//! - [`registry`]: tenant → policy versions, hot swap, rollback, bundled
//!   cases, policy directories. The engine's only door.
//! - [`engine`]: everything that touches wasmtime: compiling and caching,
//!   the sandbox and its limits, instances, WASI.
//! - [`accounting`] over the budget brain: [`ledger`] (reserve, settle,
//!   release; in-memory, durable and custom stores), [`alerts`], [`pricing`]
//!   and [`estimate`].
//! - `upstream` (features `bedrock`, `mock`): Bedrock on the wire, its error
//!   type, the event-stream codec and the built-in mock.
//! - [`config`], [`contract`], [`ids`], [`money`]: plain data everyone reads.
//!
//! Features: `default-features = false` builds the engine, the registry and
//! the budget brain only (wasmtime and little else); `durable` adds the redb
//! ledger store, `bedrock` the forwarding client and AWS credential chain,
//! `mock` the mock Bedrock, `webhooks` alert delivery, `gateway` the HTTP
//! gateway, `sdk` the in-process SDK client. `host/examples/` has one small
//! program per way of embedding.

pub mod accounting;
pub mod alerts;
#[cfg(any(feature = "bedrock", feature = "webhooks"))]
mod backoff;
pub mod config;
pub mod contract;
#[cfg(feature = "durable")]
pub mod control;
pub mod engine;
pub mod estimate;
#[cfg(feature = "gateway")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod ids;
pub mod ledger;
mod log_gate;
pub mod money;
pub mod pricing;
pub mod registry;
#[cfg(feature = "sdk")]
pub mod sdk;
mod text;
mod toml_error;
#[cfg(any(feature = "bedrock", feature = "mock"))]
pub mod upstream;
mod wall_clock;

pub use contract::{
    Action, AlertLevel, Budget, CacheLocation, CachePoint, CacheTtl, ContractVersion, Indicators, LatencyMode,
    LocalTime, ModelOption, ModelPrice, Operation, Period, Plan, RateWindow, RejectKind, Request, ServiceTier,
    TenantState, Verdict, Weekday,
};
pub use engine::component::{Item as ComponentItem, LoadOrigin, PolicyComponent};
pub use engine::failure::{FailureKind, PolicyFailure};
pub use engine::instances::InstanceStrategy;
pub use engine::{EngineSettings, LoadError, PolicyEngine};
pub use estimate::{Estimate, Estimator};
pub use ids::{ModelId, TenantId};
pub use money::NanoUsd;
pub use pricing::{Catalog, CatalogError, Price, PriceBook, StaticPrices, UnknownModel, Usage};
pub use registry::decision::{Decision, FailureMode};
pub use registry::{Registry, RegistryError};

pub use ids::PolicyVersionId;
pub use registry::version::{PolicySettings, PolicyVersion, VersionError};

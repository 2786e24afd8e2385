//! The process-wide policy engine: one `wasmtime::Engine`, one epoch ticker,
//! one linker, and the compile path for policy components.
//!
//! Invariants:
//! - One engine per process, shared behind `Arc`; cloning is cheap.
//! - A component is compiled at most once per content digest: in memory it is
//!   deduplicated, on disk its precompiled artifact is reused across restarts
//!   (see `artifact_cache`).
//! - Loading happens off the decision path; a decision only instantiates
//!   (or reuses) an instance from an already checked [`PolicyComponent`].
//! - Instances come from the pooling allocator with copy-on-write memory
//!   images, so a fresh instance costs microseconds.

pub(crate) mod artifact_cache;
pub(crate) mod component;
pub(crate) mod cpu_deadline;
pub(crate) mod epoch_ticker;
pub(crate) mod failure;
pub(crate) mod guest_output;
pub(crate) mod instances;
pub mod long_call;
pub(crate) mod sandbox;
pub(crate) mod wasi;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::contract::{ContractVersion, Request, TenantState, Verdict, names, v0_1};
use crate::engine::artifact_cache::{ArtifactCache, FileIdentity, content_digest};
use crate::engine::component::{Item, LoadOrigin, PolicyComponent, item_kind};
use crate::engine::epoch_ticker::EpochTicker;
use crate::engine::sandbox::{CallContext, policy_linker};
use crate::pricing::{Catalog, PriceBook};

/// Engine-wide settings. Per-tenant limits live in [`crate::PolicySettings`].
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Where precompiled components are kept; `None` compiles in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Instances that can be alive at once across all tenants (pooling
    /// allocator slots).
    pub max_instances: u32,
    /// The most linear memory any one instance may have; per-tenant caps
    /// are at most this.
    pub max_memory_bytes: usize,
    /// Wasm stack per call; deeper recursion traps.
    pub max_wasm_stack_bytes: usize,
    /// Use the pooling allocator (falls back to on-demand if the machine
    /// refuses the address-space reservation).
    pub pooling: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            cache_dir: None,
            max_instances: 1000,
            max_memory_bytes: 64 << 20,
            max_wasm_stack_bytes: 512 << 10,
            pooling: true,
        }
    }
}

/// Why a component could not be loaded. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("not a WebAssembly file (it does not start with the \\0asm magic); build the policy as a component")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component; wrap it with `tollgate policy build` (Rust) or `wasm-tools component new`"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "the policy imports `{name}` ({kind}), which tollgate does not provide; policies may import only `{host}` and the WASI 0.2 interfaces an interpreter needs to start. Remove the import (no files, sockets, clocks or randomness are available)",
        host = names::HOST_INTERFACE
    )]
    ForbiddenImport { name: String, kind: &'static str },
    #[error(
        "the component does not implement the tollgate:policy `policy` world (0.1.0 or 0.2.0): {detail}. It exports: {exports}"
    )]
    WrongWorld { detail: String, exports: String },
}

struct EngineInner {
    engine: wasmtime::Engine,
    linker: Linker<CallContext>,
    cache: Option<ArtifactCache>,
    settings: EngineSettings,
    prices: Arc<dyn PriceBook>,
    pooling: bool,
    loaded: Mutex<HashMap<String, Weak<PolicyComponent>>>,
    ticker: EpochTicker,
    /// Instances kept idle by all versions, which hold pool slots.
    idle_instances: AtomicUsize,
}

/// The embeddable policy engine. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<EngineInner>,
}

/// Builds a [`PolicyEngine`].
pub struct PolicyEngineBuilder {
    settings: EngineSettings,
    /// `None` until set: the embedded catalog is parsed only if it is used.
    prices: Option<Arc<dyn PriceBook>>,
}

impl PolicyEngineBuilder {
    pub fn settings(mut self, settings: EngineSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.settings.cache_dir = Some(dir.into());
        self
    }

    pub fn max_instances(mut self, n: u32) -> Self {
        self.settings.max_instances = n;
        self
    }

    /// The price table policies see through the `price` import.
    pub fn prices(mut self, prices: Arc<dyn PriceBook>) -> Self {
        self.prices = Some(prices);
        self
    }

    pub fn build(self) -> Result<PolicyEngine, EngineError> {
        let prices = self.prices.unwrap_or_else(|| Arc::new(Catalog::embedded()));
        PolicyEngine::with(self.settings, prices)
    }
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the Wasm engine: {0}")]
    Wasmtime(String),
    #[error("cannot use the policy cache directory {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(std::io::Error),
}

impl PolicyEngine {
    pub fn builder() -> PolicyEngineBuilder {
        PolicyEngineBuilder {
            settings: EngineSettings::default(),
            prices: None,
        }
    }

    fn with(settings: EngineSettings, prices: Arc<dyn PriceBook>) -> Result<Self, EngineError> {
        let (engine, pooling) = if settings.pooling {
            match wasmtime::Engine::new(&wasm_config(&settings, true)) {
                Ok(engine) => (engine, true),
                Err(err) => {
                    tracing::warn!(error = %err, "pooling allocator unavailable; using on-demand instance allocation");
                    (new_engine(&settings, false)?, false)
                }
            }
        } else {
            (new_engine(&settings, false)?, false)
        };
        let linker = policy_linker(&engine).map_err(|e| EngineError::Wasmtime(format!("{e:#}")))?;
        let cache = match &settings.cache_dir {
            Some(dir) => Some(ArtifactCache::open(dir, &engine).map_err(|source| EngineError::Cache {
                path: dir.clone(),
                source,
            })?),
            None => None,
        };
        let ticker = EpochTicker::start(engine.weak()).map_err(EngineError::Ticker)?;
        Ok(PolicyEngine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                cache,
                settings,
                prices,
                pooling,
                loaded: Mutex::new(HashMap::new()),
                ticker,
                idle_instances: AtomicUsize::new(0),
            }),
        })
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Whether instances come from the pooling allocator.
    pub fn is_pooling(&self) -> bool {
        self.inner.pooling
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// The epoch clock; hold [`EpochTicker::enter`]'s guard while Wasm runs.
    pub(crate) fn ticker(&self) -> &EpochTicker {
        &self.inner.ticker
    }

    pub(crate) fn prices(&self) -> &Arc<dyn PriceBook> {
        &self.inner.prices
    }

    /// Counts one more idle instance, if idle instances of all versions
    /// together hold less than half the engine's slots; `false` if not,
    /// and the instance is dropped. So a call always finds a slot free: with
    /// more versions than slots, idle instances must not hoard them (a call
    /// of a tenant that found none would fail), and the versions past the
    /// line decide on instances created per call instead.
    pub(crate) fn keep_idle_instance(&self) -> bool {
        let cap = self.idle_instance_cap();
        self.inner
            .idle_instances
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < cap).then_some(n + 1))
            .is_ok()
    }

    /// Whether [`Self::keep_idle_instance`] would keep one more now.
    pub(crate) fn idle_instance_room(&self) -> bool {
        self.inner.idle_instances.load(Ordering::Relaxed) < self.idle_instance_cap()
    }

    /// `n` idle instances were taken for a call or dropped.
    pub(crate) fn idle_instance_gone(&self, n: usize) {
        self.inner.idle_instances.fetch_sub(n, Ordering::Relaxed);
    }

    fn idle_instance_cap(&self) -> usize {
        usize::try_from(self.inner.settings.max_instances / 2).unwrap_or(usize::MAX)
    }

    /// Loads a policy component from a file; see [`PolicyEngine::load`].
    /// With a cache directory, a file loaded before and unchanged since is
    /// not read or hashed again (an 18 MB Python policy loads in a few
    /// milliseconds).
    pub fn load_file(&self, path: &Path) -> Result<Arc<PolicyComponent>, LoadError> {
        let cache = self.inner.cache.as_ref();
        let identity = cache.and_then(|_| FileIdentity::of(path));
        if let (Some(cache), Some(identity)) = (cache, &identity)
            && let Some(digest) = cache.digest_of(identity)
        {
            if let Some(existing) = self.loaded(&digest) {
                return Ok(Arc::new(existing.with_origin(LoadOrigin::Memory)));
            }
            if let Some(component) = cache.load(&self.inner.engine, &digest) {
                let size = usize::try_from(identity.len).unwrap_or(usize::MAX);
                let checked = Arc::new(self.check(component, digest, LoadOrigin::DiskCache, size)?);
                self.remember(&checked);
                return Ok(checked);
            }
        }
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let component = self.load(&bytes)?;
        // Noted only if the file did not change while it was read.
        if let (Some(cache), Some(before)) = (cache, identity)
            && FileIdentity::of(path).as_ref() == Some(&before)
        {
            cache.note_digest(&before, component.digest());
        }
        Ok(component)
    }

    /// Compiles (or reuses) a policy component and checks it against the
    /// contract. Slow for a new component (milliseconds to seconds); call it
    /// off the request path.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<PolicyComponent>, LoadError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        if !wasmparser::Parser::is_component(bytes) {
            return Err(LoadError::CoreModule);
        }
        let digest = content_digest(bytes);
        if let Some(existing) = self.loaded(&digest) {
            return Ok(Arc::new(existing.with_origin(LoadOrigin::Memory)));
        }
        let (component, origin) = self.compile(bytes, &digest)?;
        let checked = Arc::new(self.check(component, digest, origin, bytes.len())?);
        self.remember(&checked);
        Ok(checked)
    }

    /// Shares a loaded component with later loads of the same bytes.
    fn remember(&self, component: &Arc<PolicyComponent>) {
        let mut loaded = self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.retain(|_, weak| weak.strong_count() > 0);
        loaded.insert(component.digest().to_owned(), Arc::downgrade(component));
    }

    fn loaded(&self, digest: &str) -> Option<Arc<PolicyComponent>> {
        let loaded = self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner());
        loaded.get(digest).and_then(Weak::upgrade)
    }

    fn compile(&self, bytes: &[u8], digest: &str) -> Result<(Component, LoadOrigin), LoadError> {
        let engine = &self.inner.engine;
        let Some(cache) = &self.inner.cache else {
            let component = Component::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            return Ok((component, LoadOrigin::Compiled));
        };
        if let Some(component) = cache.load(engine, digest) {
            return Ok((component, LoadOrigin::DiskCache));
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        match cache.store(digest, &artifact) {
            Ok(path) => {
                if let Some(component) = cache.load(engine, digest) {
                    return Ok((component, LoadOrigin::Compiled));
                }
                tracing::warn!(path = %path.display(), "precompiled policy could not be mapped back; using it from memory");
            }
            Err(err) => {
                tracing::warn!(dir = %cache.dir().display(), error = %err, "cannot write the policy cache; the next start will compile again");
            }
        }
        // SAFETY: `artifact` was produced just now by this engine.
        let component =
            unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok((component, LoadOrigin::Compiled))
    }

    fn check(
        &self,
        component: Component,
        digest: String,
        origin: LoadOrigin,
        size: usize,
    ) -> Result<PolicyComponent, LoadError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        let mut imports = Vec::new();
        for (name, ext) in ty.imports(engine) {
            let kind = item_kind(&ext.ty);
            if ContractVersion::of_import(name).is_none() && !crate::engine::wasi::is_provided(name) {
                return Err(LoadError::ForbiddenImport {
                    name: name.to_owned(),
                    kind,
                });
            }
            imports.push(Item {
                name: name.to_owned(),
                kind,
            });
        }
        let exports: Vec<Item> = ty
            .exports(engine)
            .map(|(name, ext)| Item {
                name: name.to_owned(),
                kind: item_kind(&ext.ty),
            })
            .collect();
        let export_list = || {
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports
                    .iter()
                    .map(|e| format!("`{}` ({})", e.name, e.kind))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let wrong_world = |detail: String| LoadError::WrongWorld {
            detail,
            exports: export_list(),
        };
        let Some(decide) = component.get_export_index(None, names::DECIDE) else {
            return Err(wrong_world("it has no `decide` export".into()));
        };
        let validate_config = component.get_export_index(None, names::VALIDATE_CONFIG);
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| wrong_world(format!("its imports do not match the host interface: {e:#}")))?;

        // Type-check the exports once here so every later call can skip it.
        let mut store = Store::new(
            engine,
            CallContext::new(
                "load-check".into(),
                Arc::clone(&self.inner.prices),
                self.inner.settings.max_memory_bytes,
            ),
        );
        store.limiter(|cx| cx);
        store.set_epoch_deadline(LOAD_CHECK_TICKS);
        let _running = self.inner.ticker.enter();
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| LoadError::Invalid(format!("instantiating the policy failed: {e:#}")))?;
        let func = instance
            .get_func(&mut store, decide)
            .ok_or_else(|| wrong_world("`decide` is not a function".into()))?;
        // The version is the one whose types `decide` checks against; the
        // imports alone would not say, since a policy may import nothing.
        let contract = match func.typed::<(&Request, &TenantState), (Verdict,)>(&store) {
            Ok(_) => ContractVersion::V0_2,
            Err(newest) => match func.typed::<(&v0_1::Request, &v0_1::TenantState), (Verdict,)>(&store) {
                Ok(_) => ContractVersion::V0_1,
                Err(_) => {
                    return Err(wrong_world(format!(
                        "`decide` has the wrong signature for every supported contract version ({}): {newest:#}",
                        supported_versions()
                    )));
                }
            },
        };
        if let Some(import) = imports
            .iter()
            .filter_map(|i| ContractVersion::of_import(&i.name))
            .find(|v| *v != contract)
        {
            return Err(wrong_world(format!(
                "it mixes contract versions: `decide` is {contract} but it imports {import}'s interfaces"
            )));
        }
        if let Some(index) = validate_config {
            let func = instance
                .get_func(&mut store, index)
                .ok_or_else(|| wrong_world("`validate-config` is not a function".into()))?;
            func.typed::<(&str,), (Result<(), String>,)>(&store)
                .map_err(|e| wrong_world(format!("`validate-config` has the wrong signature: {e:#}")))?;
        }
        Ok(PolicyComponent {
            digest,
            pre,
            decide,
            validate_config,
            contract,
            origin,
            size,
            imports,
            exports,
        })
    }
}

fn supported_versions() -> String {
    ContractVersion::SUPPORTED.map(ContractVersion::as_str).join(", ")
}

/// Instantiation at load time gets a generous deadline: it runs once.
const LOAD_CHECK_TICKS: u64 = 1000;

fn new_engine(settings: &EngineSettings, pooling: bool) -> Result<wasmtime::Engine, EngineError> {
    wasmtime::Engine::new(&wasm_config(settings, pooling)).map_err(|e| EngineError::Wasmtime(format!("{e:#}")))
}

fn wasm_config(settings: &EngineSettings, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(settings.max_wasm_stack_bytes);
    config.memory_init_cow(true);
    config.parallel_compilation(true);
    if pooling {
        let n = settings.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n);
        // Interpreted guests (Python, JS) bundle several core modules.
        pool.total_core_instances(n.saturating_mul(4));
        pool.total_memories(n.saturating_mul(2));
        pool.total_tables(n.saturating_mul(4));
        pool.max_memory_size(settings.max_memory_bytes);
        pool.max_memories_per_component(4);
        pool.max_tables_per_component(8);
        pool.max_core_instances_per_component(32);
        // Keeping a little memory resident makes reusing a slot cheaper;
        // much more than this costs more than it saves (measured).
        pool.linear_memory_keep_resident(64 << 10);
        pool.table_keep_resident(64 << 10);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

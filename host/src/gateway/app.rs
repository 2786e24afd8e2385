//! Assembling a running gateway from a [`Config`]: price catalog, policy
//! engine and tenants' policies, ledger, alerts, upstream (or the built-in
//! mock), invocation log and metrics; then the HTTP server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::admin::AdminToken;
use super::auth::Credentials;
use super::directory::Directory;
use super::fleet;
use super::fleet_alerts::{self, ClaimGate};
use super::invocation_log::InvocationLog;
use super::lifecycle::{PolicyLifecycle, Seed};
use super::log_writer::UNWRITTEN;
use super::metrics::Metrics;
use super::policy_watch::{self, PolicyWatch};
use super::server::{self, Bound, Edges, Listen, ServeError, ServerSettings, Sessions};
use super::service::{Gateway, GatewayParts};
use crate::accounting::Accounting;
use crate::alerts::Alerts;
use crate::config::{CommitMode, Config, ControlPlace, StoreKind, UpstreamKind};
use crate::control::{ControlStore, FileControl, FleetControl, Reached, RedisControl, TenantRecord};
use crate::engine::PolicyEngine;
use crate::estimate::Estimator;
use crate::ids::TenantId;
use crate::ledger::{
    Commit, DurableStore, Ledger, LedgerSettings, LedgerStore, MemoryStore, RedisSettings, RedisStore, redacted,
};
use crate::pricing::Catalog;
use crate::registry::cases::CasesFile;
use crate::registry::policy_dir;
use crate::registry::{DecisionPool, Registry};
use crate::upstream::bedrock::{Upstream, UpstreamSettings};
use crate::upstream::mock::{MockBedrock, MockSettings};

/// The longest a shutdown waits for calls still being charged and logged.
const SHUTDOWN_IDLE_WAIT: Duration = Duration::from_secs(10);
/// How long a shutdown waits for the log's disk to take the last records.
const SHUTDOWN_LOG_WAIT: Duration = Duration::from_secs(5);

/// Why the gateway could not start. Each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("tenant {tenant}: {message}")]
    Tenant { tenant: String, message: String },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A gateway assembled but not yet listening.
pub struct Assembled {
    pub gateway: Gateway,
    pub settings: ServerSettings,
    pub listen: Listen,
    /// The operator listener (admin API, metrics, readiness).
    pub admin_listen: Listen,
    /// The listener's connection limits and timeouts.
    pub edges: Edges,
    /// The in-process mock, when the upstream is the built-in one.
    pub mock: Option<MockBedrock>,
}

/// Builds every part the config describes. Policies are compiled here (off
/// the async workers), so a broken one stops the start with its tenant named.
pub async fn assemble(config: &Config) -> Result<Assembled, StartError> {
    let cfg_err = |m: String| StartError::Config(format!("{}: {m}", config.origin.display()));
    let tenant_err = |tenant: &str, message: String| StartError::Tenant {
        tenant: tenant.to_owned(),
        message,
    };

    // The upstream.
    let (upstream, mock) = match config.upstream.kind {
        UpstreamKind::Mock => {
            let mock = MockBedrock::start(MockSettings {
                latency_ms: config.upstream.mock.latency_ms,
                stream_event_interval_ms: config.upstream.mock.stream_event_interval_ms,
                ..MockSettings::default()
            })
            .await
            .map_err(|e| cfg_err(format!("upstream: cannot start the built-in mock: {e}")))?;
            let upstream = Upstream::unsigned(&mock.url(), config.upstream.effective())
                .map_err(|e| cfg_err(format!("upstream: {e}")))?;
            (upstream, Some(mock))
        }
        UpstreamKind::Bedrock => (
            Upstream::bedrock(UpstreamSettings {
                ca_bundle: config.upstream.bedrock.ca_bundle.as_deref().map(|p| config.resolve(p)),
                ..config.upstream.bedrock.clone()
            })
            .await
            .map_err(|e| cfg_err(format!("upstream.bedrock: {e}")))?,
            None,
        ),
    };

    let mut catalog = price_book(config)?;
    // AWS bills by the region a call is sent to; the mock is priced as the catalog's first region.
    if let Some(region) = upstream.region() {
        catalog = catalog
            .in_region(region)
            .map_err(|e| cfg_err(format!("upstream region: {e}")))?;
    }
    let catalog = Arc::new(catalog);

    let mut engine = PolicyEngine::builder().prices(Arc::clone(&catalog) as _);
    if let Some(dir) = &config.engine.cache_dir {
        engine = engine.cache_dir(config.resolve(dir));
    }
    let engine = engine.build().map_err(|e| cfg_err(format!("engine: {e}")))?;
    let registry = Arc::new(Registry::new(engine).with_breaker(config.engine.breaker()));
    let pool = DecisionPool::start(config.engine.pool())
        .map_err(|e| cfg_err(format!("engine: cannot start the decision threads: {e}")))?;

    // Runtime changes kept across restarts.
    let mut fleet_control = None;
    let control: Option<Arc<dyn ControlStore>> = match config.control.place(&config.ledger) {
        ControlPlace::Memory => None,
        ControlPlace::File(path) => {
            let path = config.resolve(&path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| cfg_err(format!("control.path: cannot create {}: {e}", parent.display())))?;
            }
            Some(Arc::new(FileControl::open(&path).map_err(|e| cfg_err(e.to_string()))?))
        }
        ControlPlace::Redis { copy } => {
            let redis = &config.ledger.redis;
            let copy = config.resolve(&copy);
            if let Some(parent) = copy.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| cfg_err(format!("control.path: cannot create {}: {e}", parent.display())))?;
            }
            let redis_control = RedisControl::new(
                &redis.url,
                redacted(&redis.url),
                &redis.key_prefix,
                Duration::from_millis(redis.timeout_ms),
            )
            .map_err(|e| cfg_err(format!("ledger.redis: {e}")))?;
            let (control, reached) = FleetControl::open(redis_control, &copy).map_err(|e| cfg_err(e.to_string()))?;
            if let Reached::Copy { why } = reached {
                tracing::warn!(
                    copy = %copy.display(),
                    why = %why,
                    "Redis does not answer: starting on this replica's local copy of the fleet's tenants and policies; \
                     calls are served under failure-mode until it answers"
                );
            }
            let control = Arc::new(control);
            fleet_control = Some(Arc::clone(&control));
            Some(control as Arc<dyn ControlStore>)
        }
    };
    let lifecycle = Arc::new(PolicyLifecycle::new(Arc::clone(&registry), control.clone()));

    // Tenants: ids, profiles, credentials, policies.
    let mut records = BTreeMap::new();
    let mut cases = HashMap::new();
    let mut credentials = Vec::new();
    for (id, tenant) in &config.tenants {
        let tenant_id = TenantId::new(id).map_err(|e| tenant_err(id, e.to_string()))?;
        let base = config.origin.parent().unwrap_or(Path::new("")).to_path_buf();
        // Kept for the admin API: every later version must pass them too.
        let policy_cases = match &tenant.policy_cases {
            Some(path) => Some(Arc::new(
                CasesFile::load(&base.join(path)).map_err(|e| tenant_err(id, format!("policy-cases: {e}")))?,
            )),
            None => None,
        };
        if let Some(policy_cases) = &policy_cases {
            cases.insert(tenant_id.clone(), Arc::clone(policy_cases));
        }
        records.insert(
            tenant_id.clone(),
            TenantRecord::from_config(tenant).map_err(|e| tenant_err(id, e))?,
        );
        credentials.push((tenant_id.clone(), tenant.credentials()));
        let file = tenant.policy_file().map_err(|e| tenant_err(id, e))?;
        let lifecycle = Arc::clone(&lifecycle);
        let task_tenant = tenant_id.clone();
        tokio::task::spawn_blocking(move || {
            let (path, wasm) = policy_dir::read_component(&file, &base)?;
            let seed = Seed {
                wasm: &wasm,
                settings: file.settings(),
                source: path.display().to_string(),
                cases: policy_cases.as_deref(),
            };
            lifecycle.start_tenant(&task_tenant, seed)
        })
        .await
        .map_err(|e| tenant_err(id, e.to_string()))?
        .map_err(|e| tenant_err(id, e))?;
    }
    // The file's keys are checked as written, so errors name its entries.
    Credentials::from_config(credentials.iter().map(|(t, c)| (t, c))).map_err(|e| cfg_err(e.to_string()))?;
    if let Some(control) = &control {
        kept_tenants(control, &lifecycle, &mut records).await.map_err(cfg_err)?;
    }
    let directory = Arc::new(Directory::new(records.clone(), cases).map_err(|e| cfg_err(e.to_string()))?);

    // The ledger.
    let store: Box<dyn LedgerStore> = match config.ledger.store {
        StoreKind::Memory => Box::new(MemoryStore::new()),
        StoreKind::Redis => {
            let redis = &config.ledger.redis;
            Box::new(
                RedisStore::connect(RedisSettings {
                    url: redis.url.clone(),
                    key_prefix: redis.key_prefix.clone(),
                    timeout: Duration::from_millis(redis.timeout_ms),
                    retry_for: Duration::from_millis(redis.retry_ms),
                    lease: Duration::from_millis(redis.lease_ms),
                    allowance: redis
                        .allowance()
                        .map_err(|e| cfg_err(format!("ledger.redis.allowance-usd: {e}")))?,
                    journal: Some(config.resolve(&redis.journal)),
                })
                .map_err(|e| cfg_err(format!("ledger.redis: {e}")))?,
            )
        }
        StoreKind::Durable => {
            let path = config.resolve(&config.ledger.path);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| cfg_err(format!("ledger.path: cannot create {}: {e}", parent.display())))?;
            }
            let commit = match config.ledger.commit {
                CommitMode::Fsync => Commit::Fsync,
                CommitMode::Write => Commit::Write {
                    checkpoint: Duration::from_millis(config.ledger.checkpoint_ms),
                },
            };
            Box::new(
                DurableStore::open_with(&path, commit)
                    .map_err(|e| cfg_err(format!("ledger.path {}: {e}", path.display())))?,
            )
        }
    };
    let ledger = Ledger::new(
        store,
        LedgerSettings {
            reservation_ttl_ms: config.ledger.reservation_ttl_ms,
        },
    );
    for (tenant, record) in &records {
        ledger.set_limits(tenant, record.limits);
    }
    let alerts = if config.ledger.store == StoreKind::Redis {
        // One webhook per level change for the whole fleet.
        let redis = &config.ledger.redis;
        let claims = ClaimGate::new(
            &redis.url,
            &redis.key_prefix,
            Duration::from_millis(redis.timeout_ms),
            Duration::from_millis(config.alerts.thresholds.hysteresis.min_hold_ms),
        )
        .map_err(|e| cfg_err(format!("ledger.redis: {e}")))?;
        Alerts::new_gated(config.alerts.clone(), Arc::new(claims))
    } else {
        Alerts::new(config.alerts.clone())
    };
    let alerts = Arc::new(alerts.map_err(|e| cfg_err(format!("alerts: {e}")))?);
    let accounting = Arc::new(Accounting::new(ledger, alerts));

    let log = if config.log.invocations.as_os_str().is_empty() {
        None
    } else {
        Some(Arc::new(
            InvocationLog::open_with(config.resolve(&config.log.invocations), &config.log)
                .map_err(|e| cfg_err(e.to_string()))?,
        ))
    };

    if config.ledger.store == StoreKind::Redis {
        tokio::spawn(fleet_alerts::follow_spend(
            Arc::downgrade(&accounting),
            Arc::downgrade(&directory),
        ));
    }
    if let Some(control) = &fleet_control {
        tokio::spawn(fleet::follow(fleet::Replica {
            control: Arc::downgrade(control),
            lifecycle: Arc::clone(&lifecycle),
            directory: Arc::clone(&directory),
            accounting: Arc::clone(&accounting),
        }));
    }
    let mut metrics = Metrics::new();
    if let Some(log) = &log {
        metrics.register_log_waiting(log.waiting_gauge());
    }
    let gateway = Gateway::new(GatewayParts {
        directory,
        registry,
        lifecycle,
        pool,
        accounting,
        catalog,
        estimator: Arc::new(Estimator::new().with_scale_percent(config.estimator.input_scale_percent)),
        upstream: Arc::new(upstream),
        log,
        metrics: Arc::new(metrics),
    });

    // Before any call is admitted: their charges count against the budgets.
    let restored = gateway.charge_restored_holds().await;
    if restored > 0 {
        tracing::warn!(
            holds = restored,
            "charged the holds of calls in flight when the gateway stopped"
        );
    }

    // Replicas behind one load balancer share their dashboard sign-ins.
    let sessions = match &fleet_control {
        Some(_) => {
            let redis = &config.ledger.redis;
            Arc::new(
                Sessions::in_redis(&redis.url, &redis.key_prefix, Duration::from_millis(redis.timeout_ms))
                    .map_err(|e| cfg_err(format!("ledger.redis: {e}")))?,
            )
        }
        None => Arc::default(),
    };
    let admin_token = match &config.server.admin_token {
        Some(token) => Some(AdminToken::new(token).map_err(|e| cfg_err(format!("server.admin-token: {e}")))?),
        None => None,
    };
    let addr: SocketAddr = config
        .server
        .listen
        .parse()
        .map_err(|_| cfg_err(format!("server.listen: {:?} is not an address", config.server.listen)))?;
    let listen = match (
        &config.server.tls_cert,
        &config.server.tls_key,
        config.server.plain_http,
    ) {
        (_, _, true) => Listen::Http { addr },
        (Some(cert), Some(key), false) => Listen::Https {
            addr,
            cert: config.resolve(cert),
            key: config.resolve(key),
        },
        _ => return Err(cfg_err("server: set tls-cert and tls-key, or plain-http = true".into())),
    };
    let admin_addr: SocketAddr = config.server.admin_listen.parse().map_err(|_| {
        cfg_err(format!(
            "server.admin-listen: {:?} is not an address",
            config.server.admin_listen
        ))
    })?;
    let admin_listen = match &listen {
        Listen::Http { .. } => Listen::Http { addr: admin_addr },
        Listen::Https { cert, key, .. } => Listen::Https {
            addr: admin_addr,
            cert: cert.clone(),
            key: key.clone(),
        },
    };
    let refused = gateway.metrics().connections_refused.clone();
    Ok(Assembled {
        gateway,
        settings: ServerSettings {
            max_body_bytes: config.server.max_body_bytes,
            body_read_timeout: Duration::from_millis(config.server.body_read_timeout_ms),
            max_in_flight: config.server.max_in_flight,
            admin_token,
            sessions,
        },
        listen,
        admin_listen,
        edges: Edges {
            max_connections: config.server.max_connections,
            header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
            tls_handshake_timeout: Duration::from_millis(config.server.tls_handshake_timeout_ms),
            write_timeout: Duration::from_millis(config.server.write_timeout_ms),
            refused: Some(refused),
        },
        mock,
    })
}

/// Merges the tenants kept by the control store into the configured ones:
/// a configured tenant keeps its runtime changes while its section of the
/// file is as it was seeded, and the file wins once it changed; a tenant
/// created at runtime comes back with its policy; one that was configured
/// and is no longer in the file is forgotten.
async fn kept_tenants(
    control: &Arc<dyn ControlStore>,
    lifecycle: &Arc<PolicyLifecycle>,
    records: &mut BTreeMap<TenantId, TenantRecord>,
) -> Result<(), String> {
    let kept = control.tenants().map_err(|e| e.to_string())?;
    for (tenant, stored) in kept {
        match records.get(&tenant) {
            Some(seeded) if seeded.seed == stored.seed => {
                records.insert(tenant, stored);
            }
            Some(_) => {
                tracing::info!(tenant = %tenant, "tollgate.toml changed this tenant: its section replaces the runtime changes")
            }
            None if stored.seed.is_none() => {
                let lifecycle = Arc::clone(lifecycle);
                let task_tenant = tenant.clone();
                tokio::task::spawn_blocking(move || lifecycle.resume_tenant(&task_tenant))
                    .await
                    .map_err(|e| e.to_string())??;
                records.insert(tenant, stored);
            }
            None => {
                tracing::info!(tenant = %tenant, "the tenant is no longer in tollgate.toml; forgetting it");
                control.put_tenant(&tenant, None).map_err(|e| e.to_string())?;
            }
        }
    }
    for (tenant, record) in records.iter() {
        control.put_tenant(tenant, Some(record)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The prices a gateway of `config` charges by, before its region is
/// chosen: the embedded catalog, then the pricing file, then the tenants'
/// application inference profiles. `tollgate reconcile` reprices with it.
pub fn price_book(config: &Config) -> Result<Catalog, StartError> {
    let cfg_err = |m: String| StartError::Config(format!("{}: {m}", config.origin.display()));
    let mut catalog = Catalog::embedded();
    if let Some(path) = &config.pricing.overrides {
        catalog = catalog
            .with_overrides(config.resolve(path))
            .map_err(|e| cfg_err(format!("pricing.overrides: {e}")))?;
    }
    for (id, tenant) in &config.tenants {
        for (model, arn) in &tenant.inference_profiles {
            catalog = catalog
                .with_application_profile(arn, model)
                .map_err(|e| StartError::Tenant {
                    tenant: id.clone(),
                    message: format!("inference-profiles.\"{model}\": {e}"),
                })?;
        }
    }
    Ok(catalog)
}

/// A gateway serving in this process.
pub struct Running {
    pub gateway: Gateway,
    pub addr: SocketAddr,
    /// `https://127.0.0.1:8443`, say.
    pub url: String,
    /// The operator listener: admin API, `/metrics`, `/readyz`.
    pub admin_url: String,
    pub mock: Option<MockBedrock>,
    stop: Option<watch::Sender<bool>>,
    servers: Vec<JoinHandle<Result<(), ServeError>>>,
    /// Expiries, and the holds adopted from replicas that died.
    upkeep: JoinHandle<()>,
    /// The watched policy directory, when one is configured.
    _policy_watch: Option<PolicyWatch>,
}

impl Running {
    /// Stops accepting, lets calls in flight finish, and waits for the server.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        self.upkeep.abort();
        let mut served = Ok(());
        for server in self.servers.drain(..) {
            let result = match server.await {
                Ok(result) => result,
                Err(e) => Err(ServeError::Io(std::io::Error::other(e))),
            };
            if served.is_ok() {
                served = result;
            }
        }
        // Calls cut at the grace period are still logged as they finish,
        // shadowed ones once their shadow's verdict is in (bounded).
        let _ = tokio::time::timeout(SHUTDOWN_IDLE_WAIT, self.gateway.idle()).await;
        if let Some(printed) = self.gateway.close_log(SHUTDOWN_LOG_WAIT).await {
            // The calls that waited for room print their own records now.
            let _ = tokio::time::timeout(SHUTDOWN_IDLE_WAIT, self.gateway.idle()).await;
            // `printed` counts the queue and the writer's batches; waiting calls printed their own.
            tracing::error!(
                printed,
                "the invocation log's disk did not take every record within {} s of shutdown; each record not \
                 written is on standard error after {UNWRITTEN}. Once the disk is back, `tollgate restore-log \
                 --from <this output>` appends them to the log (docs/visibility.md)",
                SHUTDOWN_LOG_WAIT.as_secs()
            );
        }
        if let Some(mock) = self.mock.take() {
            mock.shutdown().await;
        }
        served
    }
}

/// Assembles, binds and serves. Returns once the port is open.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let assembled = assemble(config).await?;
    // Read before the ports open, so the first call already sees the directory's policies.
    let policy_watch = match &config.policy_dir.path {
        Some(dir) => Some(
            policy_watch::start(
                assembled.gateway.clone(),
                config.resolve(dir),
                Duration::from_millis(config.policy_dir.debounce_ms),
            )
            .await
            .map_err(StartError::Config)?,
        ),
        None => None,
    };
    let bound = Bound::bind(&assembled.listen).await?;
    let admin_bound = Bound::bind(&assembled.admin_listen).await?;
    let addr = bound.local_addr()?;
    let url = format!("{}://{addr}", bound.scheme());
    let admin_url = format!("{}://{}", admin_bound.scheme(), admin_bound.local_addr()?);
    let tenant_app = server::tenant_router(assembled.gateway.clone(), assembled.settings.clone());
    let operator_app = server::operator_router(assembled.gateway.clone(), assembled.settings);
    let (stop, stopped) = watch::channel(false);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let servers = vec![
        tokio::spawn(bound.serve(
            tenant_app,
            until_stopped(stopped.clone()),
            grace,
            assembled.edges.clone(),
        )),
        tokio::spawn(admin_bound.serve(operator_app, until_stopped(stopped), grace, assembled.edges)),
    ];
    let upkeep = assembled.gateway.clone();
    let upkeep = tokio::spawn(async move { upkeep.upkeep().await });
    Ok(Running {
        gateway: assembled.gateway,
        addr,
        url,
        admin_url,
        mock: assembled.mock,
        stop: Some(stop),
        servers,
        upkeep,
        _policy_watch: policy_watch,
    })
}

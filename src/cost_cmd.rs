//! `tollgate cost` prices a usage, or reprices an invocation log's records;
//! `tollgate reconcile` reprices a whole log and holds each tenant's total
//! against the ledger.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tollgate_host::config::{Config, StoreKind, UpstreamKind};
use tollgate_host::gateway::app;
use tollgate_host::gateway::invocation_log::InvocationLog;
use tollgate_host::gateway::reconcile::{reconcile, reprice};
use tollgate_host::ledger::durable::DurableStore;
use tollgate_host::ledger::store::LedgerStore;
use tollgate_host::pricing::{Catalog, LatencyMode, Metered, ServedAs, ServiceTier, Usage};
use tollgate_host::{NanoUsd, TenantId};

/// What `tollgate cost` prices.
pub struct CostArgs {
    pub config: Option<PathBuf>,
    pub region: Option<String>,
    pub model: Option<String>,
    pub usage: Usage,
    pub tier: String,
    pub latency_optimized: bool,
    pub log: Option<PathBuf>,
    pub request_id: Option<String>,
}

pub fn cost(args: CostArgs) -> Result<()> {
    let catalog = catalog(args.config.as_deref(), args.region.as_deref())?;
    if let Some(log) = &args.log {
        let records = InvocationLog::read_all(log).with_context(|| format!("cannot read {}", log.display()))?;
        let mut shown = 0;
        for record in records
            .iter()
            .filter(|r| args.request_id.as_ref().is_none_or(|id| &r.tollgate.request_id == id))
        {
            shown += 1;
            let t = &record.tollgate;
            let verdict = match reprice(&catalog, record) {
                Ok(cost) if cost == t.cost_nano_usd => format!("{} (matches)", usd(cost)),
                Ok(cost) => format!("{} (the log says {}: MISMATCH)", usd(cost), usd(t.cost_nano_usd)),
                Err(why) => format!("cannot recompute: {why}"),
            };
            println!(
                "{} {} {} from {}: {verdict}",
                t.request_id, t.tenant, record.model_id, t.charged_from
            );
        }
        if shown == 0 {
            bail!(
                "no record{} in {}",
                args.request_id
                    .map(|id| format!(" with request id {id}"))
                    .unwrap_or_default(),
                log.display()
            );
        }
        return Ok(());
    }
    let Some(model) = args.model else {
        bail!(
            "name a --model to price a usage (e.g. --model us.anthropic.claude-sonnet-4-5-20250929-v1:0 --input 1000 --output 200), or a --log to reprice"
        );
    };
    let tier = ServiceTier::parse(&args.tier)
        .with_context(|| format!("--tier {:?} is not one of default, priority, flex, reserved", args.tier))?;
    let latency = if args.latency_optimized {
        LatencyMode::Optimized
    } else {
        LatencyMode::Standard
    };
    let metered = Metered {
        usage: args.usage,
        served_as: ServedAs { tier, latency },
    };
    let resolved = catalog.resolve(&model)?;
    let charge = catalog.charge(&model, &metered)?;
    let p = charge.unit_prices;
    println!(
        "{model} in {} (price book {}): {}",
        catalog.region(),
        catalog.version(),
        usd(charge.cost.get())
    );
    println!(
        "  priced as {}{}, tier {}, latency {}{}",
        resolved.base_model,
        resolved.prefix.map(|p| format!(" via {p}.")).unwrap_or_default(),
        tier.as_str(),
        latency.as_str(),
        if charge.long_context {
            ", long-context prices"
        } else {
            ""
        }
    );
    let u = &args.usage;
    for (what, tokens, price) in [
        ("input", u.input_tokens, p.input),
        ("output", u.output_tokens, p.output),
        ("cache read", u.cache_read_input_tokens, p.cache_read),
        ("cache write 5m", u.cache_write_5m_tokens(), p.cache_write_5m),
        ("cache write 1h", u.cache_write_1h_input_tokens, p.cache_write_1h),
    ] {
        if tokens > 0 {
            println!("  {tokens:>10} {what:<15} × {}/M", usd(price.get()));
        }
    }
    Ok(())
}

/// Reprices the log and compares each tenant's total with the ledger's.
pub fn reconcile_cmd(
    config_path: &Path,
    logs: Vec<PathBuf>,
    admin_url: Option<String>,
    admin_token: Option<String>,
) -> Result<()> {
    let config = Config::load(config_path)?;
    let catalog = catalog(Some(config_path), None)?;
    // Replicas sharing one ledger each write their own log: together they are the ledger's.
    let logs = if logs.is_empty() {
        vec![config.resolve(&config.log.invocations)]
    } else {
        logs
    };
    let mut records = Vec::new();
    for log in &logs {
        records.extend(InvocationLog::read_all(log).with_context(|| format!("cannot read {}", log.display()))?);
    }
    let rec = reconcile(&catalog, &records);
    println!(
        "repriced {} records of {} with price book {} ({} priced with another book)",
        rec.records,
        logs.iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        catalog.version(),
        rec.other_price_books
    );
    if rec.superseded > 0 {
        println!(
            "left out {} restored charges of holds whose calls' own records are here: their outcomes replaced those \
             charges in the ledger",
            rec.superseded
        );
    }
    for m in &rec.mismatches {
        match &m.recomputed {
            Ok(cost) => println!(
                "  MISMATCH {} ({}): logged {}, recomputes to {}",
                m.request_id,
                m.tenant,
                usd(m.logged),
                usd(*cost)
            ),
            Err(why) => println!("  CANNOT RECOMPUTE {} ({}): {why}", m.request_id, m.tenant),
        }
    }
    let ledger = match admin_url {
        Some(url) => ledger_from_admin(&config, &url, admin_token)?,
        None => ledger_from_file(&config)?,
    };
    println!(
        "{:<24} {:>18} {:>18} {:>18} {:>14}",
        "tenant", "log", "recomputed", "ledger", "difference"
    );
    let mut tenants: Vec<&String> = rec.tenants.keys().chain(ledger.keys()).collect();
    tenants.sort();
    tenants.dedup();
    let mut exact = rec.is_exact();
    for tenant in tenants {
        let totals = rec.tenants.get(tenant).copied().unwrap_or_default();
        let booked = ledger.get(tenant).copied().unwrap_or(0);
        let difference = i128::from(totals.recomputed) - i128::from(booked);
        exact &= difference == 0 && totals.logged == totals.recomputed;
        println!(
            "{tenant:<24} {:>18} {:>18} {:>18} {:>14}",
            totals.logged, totals.recomputed, booked, difference
        );
    }
    println!("(nano-dollars)");
    if !exact {
        bail!("reconciliation is not exact: see the mismatches and differences above");
    }
    println!("reconciliation exact: every charge recomputes, and every tenant's log equals its ledger");
    Ok(())
}

/// The price book of `config` (or the embedded one), in `region` or the config's upstream region.
pub(crate) fn catalog(config: Option<&Path>, region: Option<&str>) -> Result<Catalog> {
    let (catalog, configured) = match config {
        Some(path) => {
            let config = Config::load(path)?;
            let configured = match config.upstream.kind {
                UpstreamKind::Bedrock => config.upstream.bedrock.region.clone(),
                UpstreamKind::Mock => None,
            };
            (app::price_book(&config)?, configured)
        }
        None => (Catalog::embedded(), None),
    };
    match region.map(str::to_owned).or(configured) {
        Some(region) => Ok(catalog.in_region(&region)?),
        None => Ok(catalog),
    }
}

/// Each tenant's spend over every kept period, from a running gateway.
fn ledger_from_admin(config: &Config, url: &str, token: Option<String>) -> Result<BTreeMap<String, u64>> {
    let token = token
        .or_else(|| std::env::var("TOLLGATE_ADMIN_TOKEN").ok())
        .or_else(|| config.server.admin_token.clone())
        .context("the admin API needs a token: --admin-token, TOLLGATE_ADMIN_TOKEN or admin-token in the config")?;
    let mut client = reqwest::Client::builder();
    if let Some(cert) = &config.server.tls_cert {
        let pem = std::fs::read(config.resolve(cert)).context("cannot read the gateway's tls-cert")?;
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let client = client.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let views: Vec<serde_json::Value> = runtime.block_on(async {
        let response = client
            .get(format!("{}/admin/tenants", url.trim_end_matches('/')))
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {url}"))?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() {
            bail!("the admin API answered {status}: {body}");
        }
        serde_json::from_str(&body).context("the admin API's answer is not a tenant list")
    })?;
    Ok(views
        .iter()
        .filter_map(|v| {
            Some((
                v.get("tenant")?.as_str()?.to_owned(),
                v.get("spent-all-periods-nano-usd")?.as_u64()?,
            ))
        })
        .collect())
}

/// Each tenant's spend over every kept period, from a stopped gateway's ledger file.
fn ledger_from_file(config: &Config) -> Result<BTreeMap<String, u64>> {
    match config.ledger.store {
        StoreKind::Durable => {}
        StoreKind::Memory => bail!("the ledger is in memory: pass --admin-url of the running gateway"),
        StoreKind::Redis => bail!("the ledger is in Redis: pass --admin-url of any running replica"),
    }
    let path = config.resolve(&config.ledger.path);
    let store = DurableStore::open(&path).with_context(|| {
        format!(
            "cannot open the ledger {}; if the gateway is running, pass --admin-url instead",
            path.display()
        )
    })?;
    let restored = store.take_restored();
    if !restored.is_empty() {
        let held = restored.iter().map(|h| h.cost.get()).fold(0u64, u64::saturating_add);
        println!(
            "{} holds ({}) of calls in flight when the gateway stopped are open: the gateway charges them when it \
             next starts, and logs each",
            restored.len(),
            usd(held)
        );
    }
    let mut out = BTreeMap::new();
    for id in config.tenants.keys() {
        let tenant = TenantId::new(id)?;
        let spent = store
            .history(&tenant)?
            .iter()
            .map(|p| p.spent.get())
            .fold(0u64, u64::saturating_add);
        out.insert(id.clone(), spent);
    }
    Ok(out)
}

fn usd(nano: u64) -> String {
    format!("{} ({nano} nano-USD)", NanoUsd(nano))
}

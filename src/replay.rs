//! `tollgate replay`: what a candidate policy would have decided over a
//! recorded invocation log, and the money that would have changed.
//!
//! The log is streamed (rotated files first), never loaded whole. Each
//! call that reached a policy live is decided again by the candidate, on
//! the state its own earlier decisions would have left: a real in-memory
//! ledger and real alerts, with each tenant's budget, period, tier and
//! limits from `tollgate.toml`, clocked by the records' timestamps (see
//! [`simulation`]). Pieces: [`log_stream`] (reading), [`prices`],
//! [`simulation`] (deciding and charging), [`tally`] (counting),
//! [`render`] (output).

mod log_stream;
mod prices;
mod render;
mod simulation;
mod tally;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tollgate_host::config::Config;

use self::log_stream::LogStream;
use self::prices::Prices;
use self::render::RunInfo;
use self::simulation::{CandidateSetup, Simulation, Skip};
use self::tally::Tally;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A summary table and the first changed calls.
    Text,
    /// One JSON document.
    Json,
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The candidate policy component (`.wasm`, any language).
    #[arg(long)]
    policy: PathBuf,
    /// The invocation log; its rotated files are read first. Repeat for several.
    #[arg(long, required = true)]
    log: Vec<PathBuf>,
    /// The gateway's configuration: each tenant's budget, period, tier and limits.
    #[arg(long, short, default_value = "tollgate.toml")]
    config: PathBuf,
    /// The candidate's parameters as JSON, for every tenant (default: each
    /// tenant's configured policy-config).
    #[arg(long)]
    policy_config: Option<String>,
    /// Replay only this tenant's calls. Repeat for several.
    #[arg(long)]
    tenant: Vec<String>,
    /// Show the first N changed calls in detail.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// The region calls were priced in, when not the configured upstream's.
    #[arg(long)]
    region: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let config = Config::load(&args.config).with_context(|| {
        format!(
            "tollgate replay needs the gateway's configuration for the tenants' budgets; pass it with --config \
             (tried {})",
            args.config.display()
        )
    })?;
    if let Some(text) = &args.policy_config
        && !serde_json::from_str::<serde_json::Value>(text).is_ok_and(|v| v.is_object())
    {
        bail!("--policy-config must be a JSON object, like '{{\"reject-at-percent\": 80}}'; got {text:?}");
    }
    for tenant in &args.tenant {
        if !config.tenants.contains_key(tenant) {
            bail!(
                "--tenant {tenant}: no such tenant in {}; its budget is needed to replay its calls",
                args.config.display()
            );
        }
    }
    let files = log_stream::files_of(&args.log)?;
    let prices = Prices::new(&config, args.region.as_deref())?;

    let mut engine = tollgate_host::PolicyEngine::builder().prices(prices.default_catalog() as _);
    if let Some(dir) = &config.engine.cache_dir {
        engine = engine.cache_dir(config.resolve(dir));
    }
    let engine = engine.build().context("cannot start the policy engine")?;
    let component = engine.load_file(&args.policy).with_context(|| {
        format!(
            "{} is not a policy tollgate can run; check it with `tollgate policy check {}`",
            args.policy.display(),
            args.policy.display()
        )
    })?;
    let mut simulation = Simulation::new(
        &config,
        prices,
        CandidateSetup {
            engine: &engine,
            component,
            source: args.policy.display().to_string(),
            config: args.policy_config.clone(),
            only: &args.tenant,
        },
    )?;

    let started = Instant::now();
    let mut stream = LogStream::open(files.clone())?;
    let mut tally = Tally::new(args.show);
    // Past alert level changes and policy log lines are not news: keep them off stderr.
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
        replay(&mut stream, &mut simulation, &mut tally, &args.tenant)
    })?;
    simulation.finish();
    tally.close();
    let elapsed = started.elapsed();

    let run = RunInfo {
        policy: args.policy.display().to_string(),
        files: files.iter().map(|f| f.display().to_string()).collect(),
        elapsed_ms: elapsed.as_millis() as u64,
        records_per_second: (tally.records as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
    };
    match args.format {
        Format::Text => print!("{}", render::text(&run, &tally)),
        Format::Json => println!("{}", render::json(&run, &tally)),
    }
    Ok(())
}

fn replay(stream: &mut LogStream, simulation: &mut Simulation, tally: &mut Tally, only: &[String]) -> Result<()> {
    let mut warned = BTreeSet::new();
    while let Some(batch) = stream.next_batch()? {
        for mut call in batch {
            tally.records += 1;
            let Some(recorded) = call.verdict else {
                tally.skipped.before_policy += 1;
                continue;
            };
            if !only.is_empty() && !only.contains(&call.tenant) {
                tally.skipped.not_selected += 1;
                continue;
            }
            match simulation.step(&mut call) {
                Ok(candidate) => tally.replayed(&call, recorded, &candidate),
                Err(Skip::UnknownTenant) => {
                    if warned.insert(call.tenant.clone()) {
                        eprintln!(
                            "warning: tenant {} is in the log but not in the configuration: its calls are skipped \
                             (add it under [tenants] to replay them)",
                            call.tenant
                        );
                    }
                    *tally.skipped.unknown_tenants.entry(call.tenant).or_default() += 1;
                }
                Err(Skip::Unreplayable(why)) => {
                    tally.skipped.unreplayable += 1;
                    if tally.skipped.first_unreplayable.is_none() {
                        tally.skipped.first_unreplayable =
                            Some(format!("{} ({}): {why}", call.request_id, call.tenant));
                    }
                }
            }
        }
    }
    Ok(())
}

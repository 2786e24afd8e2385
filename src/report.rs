//! `tollgate report`: where the money went, from tollgate's invocation logs
//! and Bedrock's own, grouped by tenant, user, use case, model, decision or
//! day.
//!
//! Every record is folded into its group as it is read (`group`), so ten
//! million records take the memory of their groups, not of the records.
//! tollgate's records carry their exact charge and are never repriced: a
//! report's totals are the ledger's. Bedrock's records are priced with the
//! same catalog the gateway charges with.

mod bedrock_log;
mod filter;
mod group;
mod prices;
mod problems;
mod render;
mod restored;
mod sources;
mod tollgate_log;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, bail};
use chrono::SecondsFormat;
use tollgate_host::config::Config;

use filter::Filter;
use group::{Dimension, Groups};
use prices::Prices;
use problems::Problems;
use render::{Budget, Context, OutputFormat};
use restored::HeldBack;
use sources::{Format, Source};
use tollgate_log::Joined;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// A tollgate invocation log (its rotated files beside it are read too).
    /// Repeat it for the logs of several replicas. Default: the config's
    /// `[log] invocations`, when neither this nor --bedrock-logs is given.
    #[arg(long, value_name = "PATH")]
    log: Vec<PathBuf>,
    /// A folder of Bedrock model-invocation logs downloaded from S3
    /// (`AWSLogs/<account>/BedrockModelInvocationLogs/...`, `.json.gz` or
    /// `.json`). Give it or tollgate's log for the same calls, not both.
    #[arg(long, value_name = "DIR")]
    bedrock_logs: Vec<PathBuf>,
    /// tollgate's configuration: tenants' budgets, the price book and the
    /// default log.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Group by any of tenant, user, use-case, model, decision, day (UTC),
    /// separated by commas.
    #[arg(long, value_name = "DIMENSIONS", default_value = "tenant")]
    by: String,
    /// Only calls at or after this time: RFC 3339, or a date (UTC midnight).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only calls before this time: RFC 3339, or a date (that whole day included).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only this tenant's calls; repeat it for several.
    #[arg(long, value_name = "ID")]
    tenant: Vec<String>,
    /// A table for people; CSV or JSON (exact dollars and nano-dollars) for pipelines.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Fail (exit status 1) after the report when a line was skipped or a
    /// model had no price.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let dims = Dimension::parse_list(&args.by)?;
    let filter = Filter::new(args.since.as_deref(), args.until.as_deref(), &args.tenant)?;
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let logs = match (&config, args.log.is_empty() && args.bedrock_logs.is_empty()) {
        (Some(config), true) if config.log.invocations.as_os_str().is_empty() => {
            bail!("the config's [log] invocations is off, so there is no log to read: pass --log or --bedrock-logs")
        }
        (Some(config), true) => vec![config.resolve(&config.log.invocations)],
        (None, true) => bail!(
            "name what to report on: --log PATH (tollgate's invocation log), --bedrock-logs DIR (Bedrock's logs \
             downloaded from S3), or --config tollgate.toml for the log it names"
        ),
        _ => args.log.clone(),
    };
    let mut files: Vec<Source> = Vec::new();
    for log in &logs {
        files.extend(sources::tollgate_files(log)?);
    }
    for dir in &args.bedrock_logs {
        files.extend(sources::bedrock_files(dir)?);
    }
    let mut prices = Prices::new(crate::cost_cmd::catalog(args.config.as_deref(), None)?);
    let budgets = config.as_ref().map(|c| {
        c.tenants
            .iter()
            .map(|(id, t)| {
                let budget = Budget {
                    nano: t.budget_usd.0.get(),
                    period: t.period.name(),
                };
                (id.clone(), budget)
            })
            .collect::<BTreeMap<_, _>>()
    });

    let mut groups = Groups::new(dims);
    let mut problems = Problems::default();
    let mut held_back = HeldBack::default();
    let (mut counted, mut filtered_out) = (0u64, 0u64);
    let bar = sources::progress(&files);
    for file in &files {
        let mut reader = sources::open(file, &bar)?;
        let mut last = 0;
        let read = sources::for_each_line(&mut *reader, |line, number| {
            last = number;
            if line.trim().is_empty() {
                return;
            }
            let mut unpriced = None;
            let outcome = match file.format {
                Format::Tollgate => tollgate_log::parse(line).and_then(|record| {
                    if let Joined::Restored(tenant, hold) = record.joined() {
                        held_back.hold(tenant, hold, line);
                        return Ok(());
                    }
                    record.call(&mut prices).map(|call| {
                        fold(&call, &filter, &mut groups, &mut counted, &mut filtered_out);
                    })
                }),
                Format::Bedrock => bedrock_log::parse(line).and_then(|record| {
                    record.call(&mut prices, &mut unpriced).map(|call| {
                        if fold(&call, &filter, &mut groups, &mut counted, &mut filtered_out)
                            && let Some(why) = unpriced.take()
                        {
                            problems.unpriced(call.model, why);
                        }
                    })
                }),
            };
            if let Err(error) = outcome {
                problems.malformed(&file.path, number, error);
            }
        });
        if let Err(error) = read {
            problems.broken(&file.path, last, error.to_string());
        }
    }
    bar.finish_and_clear();
    let superseded = held_back.supersede(&files);
    for line in held_back.into_lines() {
        // Each parsed once already.
        if let Ok(record) = tollgate_log::parse(&line)
            && let Ok(call) = record.call(&mut prices)
        {
            fold(&call, &filter, &mut groups, &mut counted, &mut filtered_out);
        }
    }

    let cx = Context {
        groups: &groups,
        budgets: budgets.as_ref(),
        problems: &problems,
        files: files.len(),
        counted,
        filtered_out,
        superseded,
        since: filter.since.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        until: filter.until.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = render::render(args.format, &cx, &mut out).and_then(|()| Ok(out.flush()?));
    match written {
        // A reader that stopped early (`| head`) has what it wanted.
        Err(e) if render::is_broken_pipe(&e) => return Ok(()),
        other => other?,
    }
    let mut stderr = std::io::stderr().lock();
    for line in problems.describe() {
        writeln!(stderr, "{line}")?;
    }
    if counted == 0 && problems.malformed > 0 && filtered_out == 0 {
        bail!("no line of the input is a record tollgate can read (see above)");
    }
    if args.strict && !problems.is_empty() {
        bail!("--strict: lines were skipped or calls could not be priced (see above)");
    }
    Ok(())
}

/// Adds `call` to its group if the filters let it in; says whether they did.
fn fold(call: &group::Call, filter: &Filter, groups: &mut Groups, counted: &mut u64, filtered_out: &mut u64) -> bool {
    if filter.admits(call) {
        groups.add(call);
        *counted += 1;
        true
    } else {
        *filtered_out += 1;
        false
    }
}

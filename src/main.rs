//! The `tollgate` command: policy tooling and the demo.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin_cmd;
mod cost_cmd;
mod demo;
mod log_cmd;
mod mock_cmd;
mod policy_build;
mod policy_build_c;
mod policy_build_js;
mod policy_build_py;
mod policy_cmd;
mod policy_demo;
mod policy_guest;
mod replay;
mod report;
mod serve;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Per-tenant WebAssembly cost policies in front of Amazon Bedrock"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The gateway with the built-in mock Bedrock, three example tenants and
    /// live traffic through admit, downgrade, throttle and reject.
    Demo {
        /// The policies workspace to build (default: this checkout's `policies/`).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Stop after this many seconds instead of at Ctrl-C.
        #[arg(long)]
        seconds: Option<f64>,
        /// Address for the gateway; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
    },
    /// Run the gateway: a Bedrock-compatible endpoint that decides, forwards and charges.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Serve the built-in mock of the Bedrock runtime API (Converse, ConverseStream).
    MockBedrock {
        /// Address to listen on; port 0 picks a free one.
        #[arg(long, default_value = "127.0.0.1:8788")]
        listen: std::net::SocketAddr,
        /// Delay before each reply, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Delay between the events of a stream, in milliseconds.
        #[arg(long, default_value_t = 0)]
        stream_event_interval_ms: u64,
        /// Share of calls answered with ThrottlingException (0–1).
        #[arg(long, default_value_t = 0.0)]
        throttle_rate: f64,
        /// Share of calls answered with a 500 or 503 (0–1).
        #[arg(long, default_value_t = 0.0)]
        server_error_rate: f64,
        /// Share of streams that fail after some events (0–1).
        #[arg(long, default_value_t = 0.0)]
        mid_stream_error_rate: f64,
        /// Seed of the fault draws, to replay a run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Build, check, test and benchmark policy components.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Price a call's usage as tollgate charges it, or reprice the records of
    /// an invocation log.
    Cost {
        /// Use this configuration's prices (its pricing file, profiles and
        /// upstream region); default: the embedded catalog.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The region the call is sent to (AWS bills by it).
        #[arg(long)]
        region: Option<String>,
        /// A model id, cross-region profile id (us.…) or ARN.
        #[arg(long)]
        model: Option<String>,
        /// Input tokens that were neither read from nor written to a cache.
        #[arg(long, default_value_t = 0)]
        input: u64,
        #[arg(long, default_value_t = 0)]
        output: u64,
        #[arg(long, default_value_t = 0)]
        cache_read: u64,
        #[arg(long = "cache-write-5m", default_value_t = 0)]
        cache_write_5m: u64,
        #[arg(long = "cache-write-1h", default_value_t = 0)]
        cache_write_1h: u64,
        /// The service tier: default, priority, flex or reserved.
        #[arg(long, default_value = "default")]
        tier: String,
        /// The call ran latency-optimized.
        #[arg(long)]
        latency_optimized: bool,
        /// Reprice this invocation log's records instead.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Only the record with this tollgate request id.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Operate a running gateway through its admin API: tenants, keys and
    /// policy versions.
    Admin {
        #[command(flatten)]
        target: admin_cmd::Target,
        #[command(subcommand)]
        command: admin_cmd::AdminCommand,
    },
    /// Recompute every charge of the invocation log and compare each tenant's
    /// total with the ledger; fails unless the difference is 0 nano-dollars.
    Reconcile {
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
        /// The invocation log (default: the config's). Repeat it for the
        /// logs of every replica that shares one ledger.
        #[arg(long)]
        log: Vec<PathBuf>,
        /// A running gateway, whose admin API reports the ledger; without it
        /// the ledger file of a stopped gateway is read.
        #[arg(long)]
        admin_url: Option<String>,
        /// The admin token (default: TOLLGATE_ADMIN_TOKEN, then the config's).
        #[arg(long)]
        admin_token: Option<String>,
    },
    /// Put back the invocation records a shutdown printed on standard error
    /// because the log's disk did not take them; run with the gateway stopped.
    RestoreLog {
        #[arg(long, short, default_value = "tollgate.toml")]
        config: PathBuf,
        /// The invocation log to append to (default: the config's).
        #[arg(long)]
        log: Option<PathBuf>,
        /// The gateway's standard error, kept by its supervisor; repeatable.
        /// Lines other than the printed records are ignored.
        #[arg(long, required = true)]
        from: Vec<PathBuf>,
    },
    /// Where the money went: spend, calls and decisions from tollgate's and
    /// Bedrock's invocation logs, grouped by tenant, user, use case, model,
    /// decision or day.
    Report(report::ReportArgs),
    /// What a candidate policy would have decided over a recorded invocation
    /// log, and the money it would have changed.
    Replay(replay::ReplayArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Walk the example policies through a budget in process, then show a
    /// hostile policy contained, a hot swap and a rollback.
    Demo {
        #[arg(long)]
        policies: Option<PathBuf>,
    },
    /// Compile a policy to a component: a Rust crate or workspace, or a
    /// directory with a policy.py, policy.js or policy.c.
    Build {
        /// Directory with the policy's Cargo.toml, policy.py, policy.js or policy.c.
        dir: PathBuf,
        /// Where to write the components (default: <target-dir>/components
        /// for Rust, <dir>/target otherwise).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The Python/JavaScript/C toolchain installed by
        /// policies/toolchain/install.sh (default: $TOLLGATE_TOOLS, ./.tools, PATH).
        #[arg(long)]
        tools: Option<PathBuf>,
        /// The JavaScript engine compiled into a JavaScript policy.
        #[arg(long, value_enum, default_value_t)]
        js_engine: policy_build_js::JsEngine,
    },
    /// Check that a file is a valid policy: world, imports, exports.
    Check {
        file: PathBuf,
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Run a cases file against a policy; fails with a diff on any mismatch.
    Test {
        file: PathBuf,
        cases: PathBuf,
        /// Policy parameters (JSON) for cases that do not pin their own.
        #[arg(long)]
        config: Option<String>,
    },
    /// Measure decisions per second and latency percentiles.
    Bench {
        file: PathBuf,
        /// Use the first case of this cases file as the request and state.
        #[arg(long)]
        cases: Option<PathBuf>,
        #[arg(long)]
        config: Option<String>,
        /// Seconds to run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// A fresh instance per decision instead of reused ones.
        #[arg(long)]
        fresh: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,tollgate=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            policies,
            seconds,
            listen,
        } => demo::run(demo::DemoOptions {
            policies,
            seconds,
            listen,
        }),
        Command::Policy(PolicyCommand::Demo { policies }) => policy_demo::run(policies),
        Command::Serve { config } => serve::run(&config),
        Command::Cost {
            config,
            region,
            model,
            input,
            output,
            cache_read,
            cache_write_5m,
            cache_write_1h,
            tier,
            latency_optimized,
            log,
            request_id,
        } => cost_cmd::cost(cost_cmd::CostArgs {
            config,
            region,
            model,
            usage: tollgate_host::Usage {
                input_tokens: input,
                output_tokens: output,
                cache_read_input_tokens: cache_read,
                cache_write_input_tokens: cache_write_5m.saturating_add(cache_write_1h),
                cache_write_1h_input_tokens: cache_write_1h,
            },
            tier,
            latency_optimized,
            log,
            request_id,
        }),
        Command::Reconcile {
            config,
            log,
            admin_url,
            admin_token,
        } => cost_cmd::reconcile_cmd(&config, log, admin_url, admin_token),
        Command::RestoreLog { config, log, from } => log_cmd::restore(&config, log, &from),
        Command::Admin { target, command } => admin_cmd::run(&target, command),
        Command::Report(args) => report::run(args),
        Command::Replay(args) => replay::run(args),
        Command::MockBedrock {
            listen,
            latency_ms,
            stream_event_interval_ms,
            throttle_rate,
            server_error_rate,
            mid_stream_error_rate,
            seed,
        } => mock_cmd::run(mock_cmd::MockOptions {
            listen,
            latency_ms,
            stream_event_interval_ms,
            throttle_rate,
            server_error_rate,
            mid_stream_error_rate,
            seed,
        }),
        Command::Policy(PolicyCommand::Build {
            dir,
            out,
            tools,
            js_engine,
        }) => {
            for path in policy_build::build_dir(&dir, out.as_deref(), tools.as_deref(), js_engine)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        Command::Policy(PolicyCommand::Check { file, cache_dir }) => {
            policy_cmd::check(&policy_cmd::engine(cache_dir.as_deref())?, &file)
        }
        Command::Policy(PolicyCommand::Test { file, cases, config }) => {
            policy_cmd::test(&policy_cmd::engine(None)?, &file, &cases, config.as_deref())
        }
        Command::Policy(PolicyCommand::Bench {
            file,
            cases,
            config,
            seconds,
            threads,
            fresh,
        }) => {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
                anyhow::bail!("--seconds must be between 0 and 3600");
            }
            let options = policy_cmd::BenchOptions {
                cases,
                config,
                duration: Duration::from_secs_f64(seconds),
                threads,
                fresh,
            };
            policy_cmd::bench(&policy_cmd::engine(None)?, &file, &options)
        }
    }
}

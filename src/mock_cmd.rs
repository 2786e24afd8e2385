//! `tollgate mock-bedrock`: the built-in mock of the Bedrock runtime API as a
//! standalone server, for trying clients and the gateway without AWS.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use tollgate_host::upstream::mock::{self, Faults, MockSettings};

pub struct MockOptions {
    pub listen: SocketAddr,
    pub latency_ms: u64,
    pub stream_event_interval_ms: u64,
    pub throttle_rate: f64,
    pub server_error_rate: f64,
    pub mid_stream_error_rate: f64,
    pub seed: u64,
}

pub fn run(options: MockOptions) -> Result<()> {
    for (name, rate) in [
        ("--throttle-rate", options.throttle_rate),
        ("--server-error-rate", options.server_error_rate),
        ("--mid-stream-error-rate", options.mid_stream_error_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            bail!("{name} is {rate}; give a probability between 0 and 1");
        }
    }
    let faults = if options.throttle_rate + options.server_error_rate + options.mid_stream_error_rate > 0.0 {
        Faults::Rate {
            throttle: options.throttle_rate,
            server_error: options.server_error_rate,
            mid_stream: options.mid_stream_error_rate,
        }
    } else {
        Faults::None
    };
    let settings = MockSettings {
        latency_ms: options.latency_ms,
        stream_event_interval_ms: options.stream_event_interval_ms,
        faults,
        seed: options.seed,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("cannot listen on {}; is the port in use?", options.listen))?;
        let addr = listener.local_addr()?;
        // The first line is the endpoint, so scripts and tests can read it. A
        // reader that went away is no reason to stop serving.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "mock Bedrock listening on http://{addr}");
        let _ = writeln!(
            out,
            "point a client at it with endpoint_url=\"http://{addr}\" (any credentials)"
        );
        let _ = out.flush();
        axum::serve(listener, mock::router(settings))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("the mock server failed")
    })
}

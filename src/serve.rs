//! `tollgate serve`: the gateway, as `tollgate.toml` describes it.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use tollgate_host::config::{Config, UpstreamKind};
use tollgate_host::gateway::app;

pub fn run(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = app::start(&config).await?;
        // The first line is the endpoint, so scripts and tests can read it.
        let mut out = std::io::stdout();
        let _ = writeln!(out, "tollgate listening on {}", running.url);
        // The second line is the operator listener (admin API, metrics, readiness).
        let _ = writeln!(out, "tollgate admin listening on {}", running.admin_url);
        let upstream = match (config.upstream.kind, &running.mock) {
            (UpstreamKind::Mock, Some(mock)) => format!("built-in mock Bedrock at {}", mock.url()),
            _ => format!(
                "Bedrock at {}",
                config
                    .upstream
                    .bedrock
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "the region's endpoint".into())
            ),
        };
        let _ = writeln!(out, "upstream: {upstream}");
        let tenants: Vec<&str> = config.tenants.keys().map(String::as_str).collect();
        let _ = writeln!(out, "tenants: {}", tenants.join(", "));
        if !config.log.invocations.as_os_str().is_empty() {
            let _ = writeln!(
                out,
                "invocation log: {}",
                config.resolve(&config.log.invocations).display()
            );
        }
        let _ = out.flush();
        shutdown_signal().await;
        eprintln!("tollgate: shutting down; letting calls in flight finish");
        running.shutdown().await?;
        Ok(())
    })
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

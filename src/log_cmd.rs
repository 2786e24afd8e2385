//! `tollgate restore-log`: the records a shutdown printed because the log's
//! disk did not take them, appended to the log once each.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tollgate_host::config::Config;
use tollgate_host::gateway::log_restore::restore as restore_records;

pub fn restore(config_path: &Path, log: Option<PathBuf>, from: &[PathBuf]) -> Result<()> {
    let log = match log {
        Some(log) => log,
        None => {
            let config = Config::load(config_path)?;
            config.resolve(&config.log.invocations)
        }
    };
    let mut printed = String::new();
    for file in from {
        printed.push_str(&std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?);
        printed.push('\n');
    }
    let restored = restore_records(&log, &printed).with_context(|| format!("cannot restore into {}", log.display()))?;
    if restored.torn_bytes > 0 {
        println!(
            "cut a torn last line of {} bytes off {} (its record was printed whole)",
            restored.torn_bytes,
            log.display()
        );
    }
    println!(
        "{} printed records: {} appended to {}, {} already in it",
        restored.printed,
        restored.appended,
        log.display(),
        restored.already
    );
    if restored.printed == 0 {
        println!(
            "nothing to restore: no line starts with {}",
            tollgate_host::gateway::log_writer::UNWRITTEN
        );
    }
    Ok(())
}

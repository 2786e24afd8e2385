//! Puts back the records a shutdown printed on standard error because the
//! log's disk did not take them (see [`UNWRITTEN`]). Run with the gateway
//! stopped, on the log it was writing:
//!
//! * a torn last line (the disk took part of a record) is cut off: that
//!   record was printed whole;
//! * each printed record whose request id the log already holds is skipped,
//!   so a record the disk took before it stalled is not counted twice;
//! * the others are appended, in the order printed, and synced.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use serde::Deserialize;

use super::invocation_log::InvocationRecord;
use super::log_writer::{UNWRITTEN, drop_torn_tail};

/// What [`restore`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Records printed, found in the text given.
    pub printed: usize,
    /// Printed records appended to the log.
    pub appended: usize,
    /// Printed records the log already held.
    pub already: usize,
    /// Bytes of a torn last line cut off the log.
    pub torn_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("line {line} of the printed records is not a whole record ({source}); was the output cut?")]
    Printed { line: usize, source: serde_json::Error },
}

/// Just the request id of a logged record.
#[derive(Deserialize)]
struct Logged {
    tollgate: LoggedIds,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoggedIds {
    request_id: String,
}

/// Appends to the log at `log` every record printed in `printed` (a
/// gateway's standard error, other lines ignored) that the log lacks.
pub fn restore(log: &Path, printed: &str) -> Result<Restored, RestoreError> {
    let io = |source| RestoreError::Io {
        path: log.display().to_string(),
        source,
    };
    let mut records = Vec::new();
    for (n, line) in printed.lines().enumerate() {
        if let Some(json) = line.strip_prefix(UNWRITTEN).and_then(|rest| rest.strip_prefix(' ')) {
            let record: InvocationRecord =
                serde_json::from_str(json).map_err(|source| RestoreError::Printed { line: n + 1, source })?;
            records.push((json, record.tollgate.request_id));
        }
    }
    let mut file = OpenOptions::new().read(true).append(true).open(log).map_err(io)?;
    let torn_bytes = drop_torn_tail(&mut file).map_err(io)?;

    // Only the printed ids are kept in memory, however long the log is.
    let wanted: HashSet<&str> = records.iter().map(|(_, id)| id.as_str()).collect();
    let mut held = HashSet::new();
    let reader = BufReader::new(OpenOptions::new().read(true).open(log).map_err(io)?);
    for line in reader.lines() {
        let line = line.map_err(io)?;
        // A line that is not a record is not ours to judge here; reconcile reports it.
        if let Ok(logged) = serde_json::from_str::<Logged>(&line)
            && wanted.contains(logged.tollgate.request_id.as_str())
        {
            held.insert(logged.tollgate.request_id);
        }
    }

    let mut restored = Restored {
        printed: records.len(),
        torn_bytes,
        ..Restored::default()
    };
    let mut out = Vec::new();
    for (json, id) in &records {
        // A record printed twice (by two shutdowns' output concatenated) is appended once.
        if held.insert(id.clone()) {
            out.extend_from_slice(json.as_bytes());
            out.push(b'\n');
            restored.appended += 1;
        } else {
            restored.already += 1;
        }
    }
    file.write_all(&out).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::invocation_log::{InvocationLog, SCHEMA_TYPE, SCHEMA_VERSION, TollgateFields};

    fn line(id: &str, cost: u64) -> String {
        let record = InvocationRecord {
            schema_type: SCHEMA_TYPE.into(),
            schema_version: SCHEMA_VERSION.into(),
            timestamp: "2026-11-30T10:00:00.000Z".into(),
            request_id: id.into(),
            operation: "Converse".into(),
            model_id: "amazon.nova-micro-v1:0".into(),
            input: Default::default(),
            output: Default::default(),
            request_metadata: Default::default(),
            tollgate: TollgateFields {
                request_id: id.into(),
                tenant: "acme".into(),
                cost_nano_usd: cost,
                ..TollgateFields::default()
            },
        };
        serde_json::to_string(&record).expect("JSON")
    }

    #[test]
    fn a_torn_line_is_cut_held_records_are_skipped_and_the_rest_appended_once() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("invocations.jsonl");
        let (a, b, c) = (line("a", 1), line("b", 2), line("c", 3));
        // The disk took `a` whole and half of `b`.
        std::fs::write(&log, format!("{a}\n{}", &b[..b.len() / 2])).expect("write");
        let printed = format!(
            "2026-11-30T10:00:00Z ERROR something else\n{UNWRITTEN} {a}\n{UNWRITTEN} {b}\n{UNWRITTEN} {c}\n{UNWRITTEN} {c}\n"
        );
        let restored = restore(&log, &printed).expect("restore");
        assert_eq!(
            restored,
            Restored {
                printed: 4,
                appended: 2,
                already: 2,
                torn_bytes: (b.len() / 2) as u64,
            }
        );
        let ids: Vec<String> = InvocationLog::read_all(&log)
            .expect("whole records")
            .into_iter()
            .map(|r| r.tollgate.request_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        // Twice changes nothing.
        assert_eq!(restore(&log, &printed).expect("again").appended, 0);
        assert_eq!(InvocationLog::read_all(&log).expect("log").len(), 3);
    }

    #[test]
    fn a_cut_printed_record_is_refused_and_nothing_is_appended() {
        let dir = tempfile::tempdir().expect("dir");
        let log = dir.path().join("invocations.jsonl");
        let a = line("a", 1);
        std::fs::write(&log, format!("{a}\n")).expect("write");
        let b = line("b", 2);
        let printed = format!("{UNWRITTEN} {}\n", &b[..10]);
        let e = restore(&log, &printed).expect_err("cut");
        assert!(e.to_string().contains("line 1"), "{e}");
        assert_eq!(std::fs::read_to_string(&log).expect("log"), format!("{a}\n"));
    }
}

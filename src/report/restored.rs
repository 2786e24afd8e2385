//! Restored charges, held back until every log is read.
//!
//! A restored charge (`tollgate-restored-<hold>`) is a hold charged in full
//! by the gateway that found it open, its call's process gone. On a Redis
//! fleet that process may have been alive but cut off: once its outcome gets
//! through, it replaces the charge in the ledger, and both records are in
//! the logs. The call's own record is then the charge, and the restored one
//! is left out, as `tollgate reconcile` leaves it out.
//!
//! The two may come in either order, from different replicas' logs. Restored
//! charges are few (one per adopted hold), so they are kept aside as they are
//! read; when any was, the logs are read once more for their calls' records.
//! A report with none reads its logs once.

use std::collections::HashMap;

use super::sources::{self, Format, Source};
use super::tollgate_log::{self, Joined};

/// The restored charges read so far, by tenant and hold.
#[derive(Default)]
pub struct HeldBack {
    lines: HashMap<String, HashMap<u64, Vec<String>>>,
}

impl HeldBack {
    /// Keeps a restored charge's line aside.
    pub fn hold(&mut self, tenant: &str, hold: u64, line: &str) {
        self.lines
            .entry(tenant.to_owned())
            .or_default()
            .entry(hold)
            .or_default()
            .push(line.to_owned());
    }

    /// Reads the tollgate logs among `files` again and drops every restored
    /// charge whose call has a record too; the number dropped. A file that
    /// cannot be read again (the first read reported why) drops nothing: its
    /// calls' restored charges stand, as the ledger would show them.
    pub fn supersede(&mut self, files: &[Source]) -> u64 {
        if self.lines.is_empty() {
            return 0;
        }
        let logs: Vec<Source> = files.iter().filter(|f| f.format == Format::Tollgate).cloned().collect();
        let bar = sources::progress(&logs);
        let mut dropped = 0u64;
        for file in &logs {
            let Ok(mut reader) = sources::open(file, &bar) else {
                continue;
            };
            let _ = sources::for_each_line(&mut *reader, |line, _| {
                if let Ok(record) = tollgate_log::parse(line)
                    && let Joined::Call(tenant, hold) = record.joined()
                    && let Some(holds) = self.lines.get_mut(tenant)
                    && let Some(superseded) = holds.remove(&hold)
                {
                    dropped += superseded.len() as u64;
                }
            });
        }
        bar.finish_and_clear();
        dropped
    }

    /// The restored charges no call's record superseded.
    pub fn into_lines(self) -> impl Iterator<Item = String> {
        self.lines.into_values().flat_map(HashMap::into_values).flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn line(request_id: &str, tenant: &str, reservation: u64, cost: u64) -> String {
        format!(
            r#"{{"timestamp":"2026-12-01T08:00:00Z","modelId":"m","tollgate":{{"requestId":"{request_id}","tenant":"{tenant}","decision":"admit","requestedModelId":"m","reservation":{reservation},"costNanoUsd":{cost}}}}}"#
        )
    }

    #[test]
    fn a_restored_charge_is_dropped_only_for_its_own_tenants_call_of_that_hold() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("calls.jsonl");
        let mut file = std::fs::File::create(&path).expect("create");
        for record in [
            line("call-7", "acme", 7, 30),
            // The same hold id in another tenant's books is another hold.
            line("call-8", "globex", 8, 30),
        ] {
            writeln!(file, "{record}").expect("write");
        }
        let mut held = HeldBack::default();
        for (tenant, hold) in [("acme", 7), ("acme", 8)] {
            let restored = line(&format!("tollgate-restored-{hold}"), tenant, hold, 50);
            let parsed = tollgate_log::parse(&restored).expect("parses");
            assert_eq!(parsed.joined(), Joined::Restored(tenant, hold));
            held.hold(tenant, hold, &restored);
        }
        let files = [Source {
            bytes: std::fs::metadata(&path).expect("stat").len(),
            path,
            format: Format::Tollgate,
        }];
        assert_eq!(held.supersede(&files), 1);
        let left: Vec<String> = held.into_lines().collect();
        assert_eq!(left.len(), 1);
        assert!(left[0].contains("tollgate-restored-8"), "{left:?}");
    }
}

//! The ledger's journal: a local file that keeps what Redis does not have
//! yet. First, what a replica admitted on its allowance: a hold is synced
//! here before its call is sent, a charge or a release before it is
//! acknowledged. A replica killed during an outage reads it at its next
//! start: every charge Redis never got is written (under the charge id it
//! always had, so Redis counts it once), and every call let through that
//! never finished is charged its hold. The file is emptied once nothing is
//! open or kept.
//!
//! A call that Redis held, whose settle or release could not reach Redis,
//! is kept here too: otherwise, lost with its process, its hold would be
//! adopted and charged in full, and a call that never ran would be charged.
//! At the next start it is written under the hold's id before this replica
//! adopts anything; another replica that adopts the hold first charges it
//! in full, and the write then amends that charge to the call's outcome.
//!
//! What it cannot cover, stated plainly: a replica whose disk is lost with
//! it (an ephemeral container's) loses the outage's charges. Give the
//! journal a volume that outlives the process.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::ids::TenantId;
use crate::ledger::error::StoreError;
use crate::ledger::limits::TenantLimits;
use crate::ledger::reservation::{Actual, ReservationId};
use crate::money::NanoUsd;

use super::outbox::Pending;

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "kebab-case")]
pub(super) enum Entry {
    /// A call admitted on the allowance, before it is sent: what it holds.
    Open {
        charge: String,
        tenant: String,
        cost: u64,
        tokens: u64,
    },
    /// Its charge, kept for Redis; whole in itself, with no need of its `Open`.
    Settled {
        charge: String,
        tenant: String,
        limits: TenantLimits,
        cost: u64,
        tokens: u64,
        at_ms: u64,
    },
    /// The call provably never ran: nothing to charge.
    Released { charge: String },
    /// Redis has the charge (or, for a hold Redis took, the hold's outcome).
    Written { charge: String },
    /// A hold Redis took, whose call ran: its settle, kept for Redis.
    HoldSettled {
        id: u64,
        tenant: String,
        limits: TenantLimits,
        cost: u64,
        tokens: u64,
        at_ms: u64,
        /// The owner id of the process that kept it ("" in older journals).
        #[serde(default)]
        owner: String,
    },
    /// A hold Redis took, whose call never ran: its release, kept for Redis.
    HoldReleased {
        id: u64,
        tenant: String,
        limits: TenantLimits,
        at_ms: u64,
        #[serde(default)]
        owner: String,
    },
}

/// The `charge` a [`Entry::Written`] names for a hold Redis took: apart
/// from the allowance's charge ids, which never contain a colon.
pub(super) fn hold_key(id: ReservationId) -> String {
    format!("hold:{}", id.0)
}

/// What a journal left by an earlier process still owes Redis.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Owed {
    /// Charges kept and never written: `(charge id, tenant, limits, actual, at)`.
    pub(super) charges: Vec<(String, TenantId, TenantLimits, Actual, u64)>,
    /// Calls let through that never finished: `(charge id, tenant, hold)`.
    pub(super) open: Vec<(String, TenantId, Actual)>,
    /// Settles and releases of holds Redis took, never written.
    pub(super) kept: Vec<Pending>,
}

pub(super) struct Journal {
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Opens (or creates) the journal and reads what it still owes.
    pub(super) fn open(path: &Path) -> Result<(Arc<Journal>, Owed), StoreError> {
        let bad = |detail: String| StoreError::Remote {
            store: "the ledger journal".into(),
            action: "opening it",
            detail: format!("{}: {detail}", path.display()),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| bad(format!("cannot create its folder: {e}")))?;
        }
        let owed = match File::open(path) {
            Ok(file) => owed(BufReader::new(file)).map_err(bad)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Owed::default(),
            Err(e) => return Err(bad(e.to_string())),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| bad(e.to_string()))?;
        // Two processes on one journal would empty each other's entries.
        file.try_lock().map_err(|e| {
            bad(format!(
                "{e}; another tollgate process uses this journal: give each replica its own \
                 `[ledger.redis] journal`"
            ))
        })?;
        Ok((
            Arc::new(Journal {
                path: path.to_owned(),
                file: Mutex::new(file),
            }),
            owed,
        ))
    }

    /// Appends `entry`, synced to disk when `sync`.
    pub(super) fn append(&self, entry: &Entry, sync: bool) -> Result<(), String> {
        let mut line = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line)
            .and_then(|()| if sync { file.sync_data() } else { Ok(()) })
            .map_err(|e| format!("cannot write the ledger journal {}: {e}", self.path.display()))
    }

    /// Appends and syncs `entry` off the async workers.
    pub(super) async fn append_synced(self: &Arc<Self>, entry: Entry) -> Result<(), String> {
        let journal = Arc::clone(self);
        tokio::task::spawn_blocking(move || journal.append(&entry, true))
            .await
            .unwrap_or_else(|e| Err(format!("the ledger journal's writer stopped: {e}")))
    }

    /// Empties the journal: nothing in it is owed any more, unless `kept`
    /// says a change was kept since. Asked under the file's lock, and every
    /// change is kept before it is journalled, so an entry is never emptied
    /// away while its change waits for Redis.
    pub(super) fn clear_unless(&self, kept: impl Fn() -> bool) {
        let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if kept() {
            return;
        }
        if let Err(e) = file.set_len(0) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not empty the ledger journal");
        }
    }
}

/// With no allowance configured nothing would charge the calls a journal
/// left by an earlier process admitted on its allowance: refuse to start
/// rather than lose them. Kept outcomes of holds Redis took need no
/// allowance: they are written as the process runs.
pub(super) fn refuse_allowance_owed(path: &Path, owed: &Owed) -> Result<(), StoreError> {
    let (charges, open) = (owed.charges.len(), owed.open.len());
    if charges + open == 0 {
        return Ok(());
    }
    Err(StoreError::Remote {
        store: "the ledger journal".into(),
        action: "opening it",
        detail: format!(
            "{} lists {charges} charge(s) and {open} unfinished call(s) admitted on the allowance that Redis does not \
             have yet; start with failure-mode = \"fail-open-with-allowance\" until they are written (`/readyz` says \
             ready, not degraded), then change it",
            path.display()
        ),
    })
}

/// Reads a journal: what is owed once every entry is applied in order. A
/// last line cut short (the process died writing it) was never synced, so
/// never acknowledged: it is skipped. Any other bad line is an error.
fn owed(reader: impl BufRead) -> Result<Owed, String> {
    let mut open: HashMap<String, (TenantId, Actual)> = HashMap::new();
    let mut settled: HashMap<String, (TenantId, TenantLimits, Actual, u64)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut kept: HashMap<String, Pending> = HashMap::new();
    let lines: Vec<String> = reader
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read it: {e}"))?;
    let last = lines.len();
    for (n, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = match serde_json::from_str(line) {
            Ok(entry) => entry,
            Err(_) if n + 1 == last => break,
            Err(e) => {
                return Err(format!(
                    "line {} is not a journal entry ({e}); move the file aside only once Redis has every charge it lists",
                    n + 1
                ));
            }
        };
        let tenant_of =
            |tenant: &str| TenantId::new(tenant).map_err(|e| format!("line {}: tenant {tenant:?}: {e}", n + 1));
        match entry {
            Entry::Open {
                charge,
                tenant,
                cost,
                tokens,
            } => {
                let actual = Actual {
                    cost: NanoUsd(cost),
                    tokens,
                };
                open.insert(charge.clone(), (tenant_of(&tenant)?, actual));
                order.push(charge);
            }
            Entry::Settled {
                charge,
                tenant,
                limits,
                cost,
                tokens,
                at_ms,
            } => {
                open.remove(&charge);
                let actual = Actual {
                    cost: NanoUsd(cost),
                    tokens,
                };
                settled.insert(charge.clone(), (tenant_of(&tenant)?, limits, actual, at_ms));
                order.push(charge);
            }
            Entry::Released { charge } => {
                open.remove(&charge);
            }
            Entry::Written { charge } => {
                done.insert(charge);
            }
            Entry::HoldSettled {
                id,
                tenant,
                limits,
                cost,
                tokens,
                at_ms,
                owner,
            } => {
                let actual = Actual {
                    cost: NanoUsd(cost),
                    tokens,
                };
                let id = ReservationId(id);
                let pending = Pending::Settle {
                    tenant: tenant_of(&tenant)?,
                    limits,
                    id,
                    actual,
                    now_ms: at_ms,
                    owner: Some(owner),
                };
                kept.insert(hold_key(id), pending);
                order.push(hold_key(id));
            }
            Entry::HoldReleased {
                id,
                tenant,
                limits,
                at_ms,
                owner,
            } => {
                let id = ReservationId(id);
                let tenant = tenant_of(&tenant)?;
                kept.insert(
                    hold_key(id),
                    Pending::Release {
                        tenant,
                        limits,
                        id,
                        now_ms: at_ms,
                        owner: Some(owner),
                    },
                );
                order.push(hold_key(id));
            }
        }
    }
    let mut owed = Owed::default();
    let mut seen = std::collections::HashSet::new();
    for charge in order {
        if done.contains(&charge) || !seen.insert(charge.clone()) {
            continue;
        }
        if let Some(pending) = kept.remove(&charge) {
            owed.kept.push(pending);
        } else if let Some((tenant, limits, actual, at)) = settled.remove(&charge) {
            owed.charges.push((charge, tenant, limits, actual, at));
        } else if let Some((tenant, hold)) = open.remove(&charge) {
            owed.open.push((charge, tenant, hold));
        }
    }
    Ok(owed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::period::Period;

    fn limits() -> TenantLimits {
        TenantLimits {
            budget: NanoUsd(1_000_000),
            period: Period::Monthly,
            time_zone: chrono_tz::Tz::UTC,
            rpm: None,
            tpm: None,
            included_tokens: 0,
        }
    }

    fn lines(entries: &[Entry]) -> String {
        entries
            .iter()
            .map(|e| serde_json::to_string(e).expect("json") + "\n")
            .collect()
    }

    fn open(charge: &str, cost: u64) -> Entry {
        Entry::Open {
            charge: charge.into(),
            tenant: "acme".into(),
            cost,
            tokens: 10,
        }
    }

    fn settled(charge: &str, cost: u64) -> Entry {
        Entry::Settled {
            charge: charge.into(),
            tenant: "acme".into(),
            limits: limits(),
            cost,
            tokens: 7,
            at_ms: 5,
        }
    }

    #[test]
    fn owes_the_unwritten_charges_and_the_unfinished_calls_once_each() {
        let text = lines(&[
            open("a", 100),
            open("b", 200),
            open("c", 300),
            open("d", 400),
            settled("a", 60),
            settled("b", 70),
            Entry::Written { charge: "b".into() },
            Entry::Released { charge: "c".into() },
        ]);
        let owed = owed(text.as_bytes()).expect("reads");
        let acme = TenantId::new("acme").expect("id");
        assert_eq!(
            owed.charges,
            vec![(
                "a".to_owned(),
                acme.clone(),
                limits(),
                Actual {
                    cost: NanoUsd(60),
                    tokens: 7
                },
                5
            )]
        );
        assert_eq!(
            owed.open,
            vec![(
                "d".to_owned(),
                acme,
                Actual {
                    cost: NanoUsd(400),
                    tokens: 10
                }
            )]
        );
    }

    #[test]
    fn owes_the_unwritten_outcomes_of_holds_redis_took() {
        let hold_released = |id, at_ms| Entry::HoldReleased {
            id,
            tenant: "acme".into(),
            limits: limits(),
            at_ms,
            owner: String::new(),
        };
        let text = lines(&[
            Entry::HoldSettled {
                id: 41,
                tenant: "acme".into(),
                limits: limits(),
                cost: 60,
                tokens: 7,
                at_ms: 5,
                owner: "r1".into(),
            },
            hold_released(42, 6),
            hold_released(43, 7),
            Entry::Written {
                charge: hold_key(ReservationId(43)),
            },
            // An allowance charge id is never taken for a hold's.
            Entry::Written { charge: "41".into() },
        ]);
        // The releases as a journal written before entries named their owner.
        let older = text.replace(",\"owner\":\"\"", "");
        assert_ne!(older, text);
        let owed = owed(older.as_bytes()).expect("reads");
        let acme = TenantId::new("acme").expect("id");
        let settle = Pending::Settle {
            tenant: acme.clone(),
            limits: limits(),
            id: ReservationId(41),
            actual: Actual {
                cost: NanoUsd(60),
                tokens: 7,
            },
            now_ms: 5,
            owner: Some("r1".into()),
        };
        let release = Pending::Release {
            tenant: acme,
            limits: limits(),
            id: ReservationId(42),
            now_ms: 6,
            owner: Some(String::new()),
        };
        assert_eq!(owed.kept, vec![settle, release]);
        assert!(owed.charges.is_empty() && owed.open.is_empty());
    }

    #[test]
    fn failing_closed_starts_with_kept_outcomes_but_not_with_calls_admitted_on_an_allowance() {
        let path = Path::new("journal.jsonl");
        let kept = lines(&[Entry::HoldReleased {
            id: 42,
            tenant: "acme".into(),
            limits: limits(),
            at_ms: 6,
            owner: String::new(),
        }]);
        let owed_kept = owed(kept.as_bytes()).expect("reads");
        assert!(refuse_allowance_owed(path, &owed_kept).is_ok());
        let admitted = owed(lines(&[open("a", 100)]).as_bytes()).expect("reads");
        let refused = refuse_allowance_owed(path, &admitted).expect_err("owes an allowance call");
        assert!(refused.to_string().contains("fail-open-with-allowance"), "{refused}");
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_any_other_bad_line_is_an_error() {
        let mut text = lines(&[open("a", 100)]);
        text.push_str("{\"entry\":\"sett");
        assert_eq!(owed(text.as_bytes()).expect("reads").open.len(), 1);
        let text = format!("not json\n{}", lines(&[open("a", 100)]));
        let err = owed(text.as_bytes()).expect_err("a bad line");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_cleared_journal_owes_nothing_and_takes_new_entries() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("journal.jsonl");
        let (journal, owed_at_start) = Journal::open(&path).expect("open");
        assert_eq!(owed_at_start, Owed::default());
        journal.append(&open("a", 1), true).expect("append");
        journal.clear_unless(|| false);
        journal.append(&open("b", 2), true).expect("append");
        // A change kept while the journal was about to be emptied keeps it.
        journal.clear_unless(|| true);
        drop(journal);
        let (_, owed) = Journal::open(&path).expect("reopen");
        assert_eq!(owed.open.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}

//! The durable store survives `kill -9`: a child process runs it under load
//! and prints each settle as it is acknowledged; the parent kills it mid-run,
//! reopens the database and finds every acknowledged charge, and every
//! acknowledged hold open, to be charged once. In each commit
//! mode: fsync per batch, and the write-ahead log with checkpoints far apart
//! (everything replayed from the log) or close together; on the log, both
//! from threads and from async tasks that commit their own batches.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tollgate_host::ids::TenantId;
use tollgate_host::ledger::{
    Actual, Commit, DurableStore, Ledger, LedgerSettings, LedgerStore, Reservation, ReservationId, ReserveRequest,
    TenantLimits,
};
use tollgate_host::money::NanoUsd;

const DB_ENV: &str = "TOLLGATE_LEDGER_CRASH_DB";
/// The child's commit mode: `fsync`, or `write:<checkpoint ms>`.
const COMMIT_ENV: &str = "TOLLGATE_LEDGER_CRASH_COMMIT";

fn commit(mode: &str) -> Commit {
    match mode.split_once(':') {
        Some(("write", ms)) => Commit::Write {
            checkpoint: Duration::from_millis(ms.parse().unwrap()),
        },
        _ => Commit::Fsync,
    }
}
/// Set when the child writes from async tasks rather than threads.
const TASKS_ENV: &str = "TOLLGATE_LEDGER_CRASH_TASKS";
/// The child's clock starts here and advances one millisecond per call.
const T0: u64 = 1_749_988_800_000;
const TTL: u64 = 60_000;
const ACKS_BEFORE_KILL: usize = 2_000;

fn tenant(i: u64) -> TenantId {
    TenantId::new(&format!("crash-{i}")).unwrap()
}

fn limits() -> TenantLimits {
    TenantLimits::monthly(NanoUsd::from_usd(1_000_000))
}

/// Run by the parent as a separate process; does nothing when run on its own.
#[test]
#[ignore = "child process of the a_killed_writer tests"]
fn child_writer() {
    let Ok(path) = std::env::var(DB_ENV) else { return };
    let mode = std::env::var(COMMIT_ENV).unwrap_or_default();
    let ledger = Arc::new(Ledger::new(
        DurableStore::open_with(&path, commit(&mode)).unwrap(),
        LedgerSettings {
            reservation_ttl_ms: TTL,
        },
    ));
    for i in 0..4 {
        ledger.set_limits(&tenant(i), limits());
    }
    let clock = Arc::new(AtomicU64::new(T0));
    if std::env::var(TASKS_ENV).is_ok() {
        return tasks_writer(ledger, clock);
    }
    let threads: Vec<_> = (0..8u64)
        .map(|w| {
            let (ledger, clock) = (ledger.clone(), clock.clone());
            std::thread::spawn(move || {
                for n in 0u64.. {
                    let call = Call::new(n, w, &clock);
                    let r = ledger.reserve(&call.tenant, call.request()).unwrap();
                    if call.left_open(&r) {
                        continue;
                    }
                    let now_ms = clock.fetch_add(1, Ordering::Relaxed);
                    ledger.settle(&call.tenant, r.id, call.actual(), now_ms).unwrap();
                    call.acknowledge(&r);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// The child as the gateway drives the store: tasks on async workers that
/// await their holds and charges, which commit their own batches when no
/// one else is committing.
fn tasks_writer(ledger: Arc<Ledger<DurableStore>>, clock: Arc<AtomicU64>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let tasks: Vec<_> = (0..32u64)
            .map(|w| {
                let (ledger, clock) = (ledger.clone(), clock.clone());
                tokio::spawn(async move {
                    for n in 0u64.. {
                        let call = Call::new(n, w, &clock);
                        let r = ledger.reserve_async(&call.tenant, call.request()).await.unwrap();
                        if call.left_open(&r) {
                            continue;
                        }
                        let now_ms = clock.fetch_add(1, Ordering::Relaxed);
                        let (_, durable) = ledger.settle_queued(&call.tenant, r.id, call.actual(), now_ms).unwrap();
                        durable.wait().await.unwrap();
                        call.acknowledge(&r);
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// One call of a child writer: its tenant, hold and charge.
struct Call {
    n: u64,
    tenant: TenantId,
    cost: u64,
    now_ms: u64,
}

impl Call {
    fn new(n: u64, w: u64, clock: &AtomicU64) -> Call {
        Call {
            n,
            tenant: tenant(n % 4),
            cost: 1_000 + (n * 7 + w) % 5_000,
            now_ms: clock.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn request(&self) -> ReserveRequest {
        ReserveRequest {
            cost: NanoUsd(self.cost),
            tokens: 100,
            now_ms: self.now_ms,
            ceiling: None,
        }
    }

    /// Every fifth hold is left open, as by a call in flight at the crash:
    /// reserve has returned, so the hold is durable and must come back to
    /// be charged.
    fn left_open(&self, r: &Reservation) -> bool {
        if self.n % 5 != 4 {
            return false;
        }
        writeln!(
            std::io::stdout().lock(),
            "OPEN {} {} {}",
            self.tenant,
            r.id.0,
            r.expires_at_ms
        )
        .unwrap();
        true
    }

    fn actual(&self) -> Actual {
        Actual {
            cost: NanoUsd(self.cost - self.n % 100),
            tokens: 90,
        }
    }

    /// Printed only once settle has returned: the charge is durable.
    fn acknowledge(&self, r: &Reservation) {
        let charge = self.cost - self.n % 100;
        writeln!(std::io::stdout().lock(), "ACK {} {} {}", self.tenant, r.id.0, charge).unwrap();
    }
}

#[test]
fn a_killed_writer_loses_no_acknowledged_settle() {
    killed_writer("fsync", false);
}

#[test]
fn a_killed_writer_on_the_log_loses_no_acknowledged_settle() {
    killed_writer("write:3600000", false);
}

#[test]
fn a_killed_writer_checkpointing_often_loses_no_acknowledged_settle() {
    killed_writer("write:2", false);
}

#[test]
fn killed_tasks_committing_their_own_batches_lose_no_acknowledged_settle() {
    killed_writer("write:2", true);
}

#[test]
fn killed_tasks_on_the_log_alone_lose_no_acknowledged_settle() {
    killed_writer("write:3600000", true);
}

fn killed_writer(mode: &str, tasks: bool) {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-ledger-crash-{}-{}-{}",
        std::process::id(),
        mode.replace(':', "-"),
        if tasks { "tasks" } else { "threads" }
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("ledger.redb");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DB_ENV, &db)
        .env(COMMIT_ENV, mode)
        .envs(tasks.then_some((TASKS_ENV, "1")))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = [0u64; 4];
    let mut acked_ids = HashSet::new();
    let mut opened = Vec::new();
    let mut acks = 0;
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let fields: Vec<&str> = line.split(' ').collect();
        match fields.as_slice() {
            ["ACK", t, id, charge] => {
                let i: usize = t.trim_start_matches("crash-").parse().unwrap();
                acked[i] += charge.parse::<u64>().unwrap();
                assert!(
                    acked_ids.insert(id.parse::<u64>().unwrap()),
                    "id {id} acknowledged twice"
                );
                acks += 1;
                if acks == ACKS_BEFORE_KILL {
                    child.kill().unwrap(); // SIGKILL: no destructor, no flush.
                    break;
                }
            }
            ["OPEN", t, id, expires] => {
                let i: u64 = t.trim_start_matches("crash-").parse().unwrap();
                opened.push((i, ReservationId(id.parse().unwrap()), expires.parse::<u64>().unwrap()));
            }
            _ => {} // the test harness's own lines
        }
    }
    child.wait().unwrap();
    assert_eq!(acks, ACKS_BEFORE_KILL, "the child stopped early");
    let wal = dir.join("ledger.redb.wal");
    if mode == "write:3600000" {
        // No checkpoint ran: every acknowledged charge must come back from the log.
        assert!(std::fs::metadata(&wal).unwrap().len() > 0, "the log is empty");
    }

    // Reopened at a time before any expiry: every acknowledged charge is there.
    let settings = LedgerSettings {
        reservation_ttl_ms: TTL,
    };
    let ledger = Ledger::new(DurableStore::open(&db).unwrap(), settings);
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        0,
        "a replayed log is emptied once the database holds it"
    );
    for (i, acked) in acked.iter().enumerate() {
        let t = tenant(i as u64);
        ledger.set_limits(&t, limits());
        let state = ledger.snapshot(&t, T0).unwrap();
        // Settles after the last line read may also have landed: at least, never less.
        assert!(
            state.spent.0 >= *acked,
            "{t}: spent {} < acknowledged {acked}",
            state.spent
        );
    }
    // New ids never collide with ones issued before the crash.
    let r = ledger
        .reserve(
            &tenant(0),
            ReserveRequest {
                cost: NanoUsd(1),
                tokens: 1,
                now_ms: T0,
                ceiling: None,
            },
        )
        .unwrap();
    assert!(!acked_ids.contains(&r.id.0));
    ledger.release(&tenant(0), r.id, T0).unwrap();

    // Every hold acknowledged open came back, to be charged: its call may
    // have run. None was settled before (a hold is closed by its settle).
    let restored = ledger.store().take_restored();
    let restored_ids: HashSet<u64> = restored.iter().map(|h| h.id.0).collect();
    assert_eq!(restored_ids.len(), restored.len(), "a hold restored twice");
    for (i, id, _) in &opened {
        assert!(
            restored_ids.contains(&id.0),
            "the open hold {id} of crash-{i} was not restored"
        );
    }
    assert!(restored_ids.is_disjoint(&acked_ids), "a settled call's hold came back");
    assert!(
        ledger.store().take_restored().is_empty(),
        "restored holds are handed out once"
    );
    // Restored holds never expire: only a charge ends them.
    let latest_expiry = opened.iter().map(|(_, _, expires)| *expires).max().unwrap();
    let later = latest_expiry + 3_600_000;
    assert_eq!(ledger.expire(later).unwrap(), 0);
    let before: Vec<NanoUsd> = (0..4)
        .map(|i| ledger.snapshot(&tenant(i), later).unwrap().spent)
        .collect();
    let mut charged = [0u64; 4];
    for hold in &restored {
        let i: usize = hold.tenant.as_str().trim_start_matches("crash-").parse().unwrap();
        let settled = ledger
            .settle(
                &hold.tenant,
                hold.id,
                Actual {
                    cost: hold.cost,
                    tokens: hold.tokens,
                },
                later,
            )
            .unwrap();
        assert_eq!(settled.charged, hold.cost);
        charged[i] += hold.cost.0;
    }
    let spent: Vec<NanoUsd> = (0..4)
        .map(|i| {
            let state = ledger.snapshot(&tenant(i), later).unwrap();
            assert_eq!(
                (state.reserved, state.open_reservations),
                (NanoUsd::ZERO, 0),
                "{}",
                tenant(i)
            );
            assert_eq!(
                state.spent.0,
                before[i as usize].0 + charged[i as usize],
                "{}",
                tenant(i)
            );
            state.spent
        })
        .collect();
    drop(ledger);

    // Reopened, nothing comes back and nothing is charged twice.
    let ledger = Ledger::new(DurableStore::open(&db).unwrap(), settings);
    assert!(ledger.charge_restored(later).is_empty());
    for (i, spent) in spent.iter().enumerate() {
        ledger.set_limits(&tenant(i as u64), limits());
        let state = ledger.snapshot(&tenant(i as u64), later).unwrap();
        assert_eq!((state.open_reservations, state.spent), (0, *spent));
    }
    drop(ledger);
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The durable store: an embedded redb database behind an in-memory image.
//! Reads and admission decisions use the image (no disk I/O on the request
//! path); every change is written through in order by a group committer.
//! A reservation is acknowledged like a settle
//! ([`reserve_queued`](super::LedgerStore::reserve_queued)), so a call is
//! forwarded only once its hold is durable; a release is written through
//! without waiting. A hold found open at load belongs to a call whose
//! process stopped during it: Bedrock may have run it, so it is restored
//! open, never expires, and is handed out to be charged
//! ([`take_restored`](super::LedgerStore::take_restored)). When a write is
//! acknowledged depends on [`Commit`]:
//!
//! Either way a batch is appended to the write-ahead log ([`super::wal`]),
//! and a checkpoint (one database commit and fsync) copies the log into the
//! database now and then:
//!
//! - `Fsync`: once its batch is appended and flushed to disk (one
//!   `fdatasync` per batch, far cheaper than a database commit). It
//!   survives `kill -9`, an OS crash and a power cut.
//! - `Write`: once its batch is appended with one `write`, no flush. It
//!   survives `kill -9` and any crash of the process; an OS crash or power
//!   cut can lose the settles of the last checkpoint interval. A checkpoint
//!   runs at most that interval apart while writes come.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::book::{Books, Change, lock};
use super::book_store::{BookStore, Journal, Waiter};
use super::error::StoreError;
use super::group_commit::{CommitBatch, GroupCommit, Ticket, Writer};
use super::period::PeriodTotals;
use super::reservation::{OpenReservation, ReservationId};
use super::store::{Durable, RestoredHold};
use super::wal::Wal;
pub use super::wal::Write;

/// "next_id": a ceiling above every reservation id issued and persisted.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (tenant, period start) → (period end, spent, used tokens, calls).
const PERIODS: TableDefinition<(&str, u64), (u64, u64, u64, u64)> = TableDefinition::new("periods");
/// id → (tenant, cost, tokens, minute, period start, expires at).
const OPEN: TableDefinition<u64, (&str, u64, u64, u64, u64, u64)> = TableDefinition::new("open_reservations");

/// How often the database takes the log with `Commit::Fsync`: the log is
/// already on disk, so this bounds only its length and the replay.
pub const FSYNC_CHECKPOINT: Duration = Duration::from_secs(1);

/// Ids are persisted as a ceiling raised a block at a time, so most commits
/// need not touch the meta table.
const ID_BLOCK: u64 = 1 << 20;

/// When a settle is acknowledged; see the module's documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// After its batch is written to the write-ahead log and flushed to
    /// disk; the database takes the log every [`FSYNC_CHECKPOINT`].
    Fsync,
    /// After its batch is written to the write-ahead log; the database
    /// takes the log in a checkpoint at most `checkpoint` apart.
    Write { checkpoint: Duration },
}

impl Write {
    fn from_change(tenant: &TenantId, change: Change<'_>) -> Write {
        match change {
            Change::Opened(r) => Write::Opened(tenant.clone(), *r),
            Change::Closed(id) => Write::Closed(id),
            Change::Totals(t) => Write::Totals(tenant.clone(), *t),
        }
    }
}

/// The durable journal: a group committer over the redb database.
pub struct Redb {
    committer: GroupCommit<Write>,
    path: PathBuf,
}

impl Journal for Redb {
    type Entry = Write;
    type Ticket = Ticket;

    fn entry(tenant: &TenantId, change: Change<'_>) -> Option<Write> {
        Some(Write::from_change(tenant, change))
    }

    fn check(&self) -> Result<(), StoreError> {
        self.committer.check()
    }

    fn enqueue(&self, entries: Vec<Write>, waiter: Waiter) -> Result<Ticket, StoreError> {
        self.committer.enqueue(entries, waiter)
    }

    fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.committer.wait(ticket)
    }

    fn durable(&self, ticket: Ticket) -> Durable {
        self.committer.durable(ticket)
    }
}

/// Tenants' books in memory, written through to redb.
pub type DurableStore = BookStore<Redb>;

impl BookStore<Redb> {
    /// Open (or create) the database at `path` and load it into memory,
    /// acknowledging writes after their fsync ([`Commit::Fsync`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Commit::Fsync)
    }

    /// [`open`](Self::open) with the acknowledgement rule `commit`. A
    /// write-ahead log left by an earlier run, in either mode, is replayed
    /// into the database first.
    pub fn open_with(path: impl AsRef<Path>, commit: Commit) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let err = |action: &'static str| {
            let path = shown.clone();
            move |e: &dyn std::fmt::Display| StoreError::Database {
                path: path.clone(),
                action,
                detail: e.to_string(),
            }
        };
        let db = Database::create(&path).map_err(|e| err("opening")(&e))?;
        let wal = replay_wal(&db, &path).map_err(|e| err("replaying the write-ahead log")(&e))?;
        let books = Books::default();
        let mut restored = Vec::new();
        let mut next_id = 1;
        let txn = db.begin_write().map_err(|e| err("starting the load transaction")(&e))?;
        {
            let loading = err("loading");
            let mut meta = txn.open_table(META).map_err(|e| loading(&e))?;
            let periods = txn.open_table(PERIODS).map_err(|e| loading(&e))?;
            let open = txn.open_table(OPEN).map_err(|e| loading(&e))?;
            if let Some(stored) = meta.get("next_id").map_err(|e| loading(&e))? {
                next_id = stored.value();
            }
            let mut tenants: HashMap<String, TenantId> = HashMap::new();
            let mut tenant = |name: &str| -> Result<TenantId, StoreError> {
                if let Some(t) = tenants.get(name) {
                    return Ok(t.clone());
                }
                let t = TenantId::new(name).map_err(|e| loading(&e))?;
                tenants.insert(name.to_string(), t.clone());
                Ok(t)
            };
            for row in periods.iter().map_err(|e| loading(&e))? {
                let (key, value) = row.map_err(|e| loading(&e))?;
                let (name, start_ms) = key.value();
                let (end_ms, spent, used_tokens, calls) = value.value();
                let totals = PeriodTotals {
                    start_ms,
                    end_ms,
                    spent: NanoUsd(spent),
                    used_tokens,
                    calls,
                };
                lock(&books.get(&tenant(name)?)).restore_period(totals);
            }
            for row in open.iter().map_err(|e| loading(&e))? {
                let (key, value) = row.map_err(|e| loading(&e))?;
                let id = key.value();
                next_id = next_id.max(id.saturating_add(1));
                let (name, cost, tokens, minute, period_start_ms, _expires_at_ms) = value.value();
                let tenant = tenant(name)?;
                // Its process is gone, so nothing will end it but a charge:
                // an expiry would return money Bedrock may have billed.
                let r = OpenReservation {
                    id: ReservationId(id),
                    cost: NanoUsd(cost),
                    ceiling: NanoUsd(cost),
                    tokens,
                    minute,
                    period_start_ms,
                    expires_at_ms: u64::MAX,
                };
                lock(&books.get(&tenant)).restore_open(r);
                restored.push(RestoredHold {
                    tenant,
                    id: r.id,
                    cost: r.cost,
                    tokens,
                });
            }
            meta.insert("next_id", next_id.saturating_add(ID_BLOCK))
                .map_err(|e| loading(&e))?;
        }
        txn.commit().map_err(|e| err("committing the load")(&e))?;

        let id_ceiling = next_id.saturating_add(ID_BLOCK);
        // An append to the log is short enough for a waiting task to make
        // itself; a flush is not.
        let (checkpoint, flush) = match commit {
            Commit::Write { checkpoint } => (checkpoint, false),
            Commit::Fsync => (FSYNC_CHECKPOINT, true),
        };
        let batches = logged_batches(db, wal, id_ceiling, checkpoint, flush, err("committing"));
        let committer = GroupCommit::start("tollgate-ledger-commit", checkpoint, !flush, batches)
            .map_err(|e| err("starting the committer")(&e))?;
        if !restored.is_empty() {
            tracing::warn!(
                holds = restored.len(),
                "found holds of calls that were in flight when the gateway stopped; they are charged, not released"
            );
        }
        Ok(BookStore::from_parts(books, next_id, Redb { committer, path }).with_restored(restored))
    }

    pub fn path(&self) -> &Path {
        &self.journal().path
    }
}

/// Each batch is appended to the log, and with `flush` flushed to disk; a
/// checkpoint writes what the log holds to the database, then starts the
/// log over.
fn logged_batches(
    db: Database,
    mut wal: Wal,
    mut id_ceiling: u64,
    checkpoint: Duration,
    flush: bool,
    error: impl Fn(&dyn std::fmt::Display) -> StoreError + Send + 'static,
) -> CommitBatch<Write> {
    let mut logged: Vec<Write> = Vec::new();
    let mut last_checkpoint = Instant::now();
    Box::new(move |batch: Vec<Write>, writer| {
        let due = match writer {
            // A task on an async worker never waits for the disk.
            Writer::Task => false,
            Writer::Committer => last_checkpoint.elapsed() >= checkpoint,
            Writer::Idle => true,
        };
        if !batch.is_empty() {
            wal.append(&batch).map_err(|e| error(&e))?;
            if flush {
                wal.flush().map_err(|e| error(&e))?;
            }
            logged.extend(batch);
        }
        if due && !logged.is_empty() {
            write_batch(&db, std::mem::take(&mut logged), &mut id_ceiling).map_err(|e| error(&e))?;
            wal.reset().map_err(|e| error(&e))?;
            last_checkpoint = Instant::now();
        }
        Ok(!logged.is_empty())
    })
}

/// Writes what an earlier run left in the log to the database, durably,
/// and returns the log, empty.
fn replay_wal(db: &Database, path: &Path) -> Result<Wal, String> {
    let (mut wal, writes) = Wal::open(path).map_err(|e| e.to_string())?;
    if !writes.is_empty() {
        tracing::info!(writes = writes.len(), log = %wal.path().display(), "replaying the ledger's write-ahead log");
        let mut id_ceiling = {
            let txn = db.begin_read().map_err(text)?;
            match txn.open_table(META) {
                Ok(meta) => meta.get("next_id").map_err(text)?.map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(text(e)),
            }
        };
        write_batch(db, writes, &mut id_ceiling)?;
    }
    wal.reset().map_err(|e| e.to_string())?;
    Ok(wal)
}

/// Commit one batch in one transaction. A reservation opened and closed in
/// the same batch never touches the disk; for a period only the last totals
/// are written.
fn write_batch(db: &Database, batch: Vec<Write>, id_ceiling: &mut u64) -> Result<(), String> {
    let mut opened: HashMap<ReservationId, (TenantId, OpenReservation)> = HashMap::new();
    let mut closed = Vec::new();
    let mut totals: HashMap<(TenantId, u64), PeriodTotals> = HashMap::new();
    let mut max_id = None;
    for write in batch {
        match write {
            Write::Opened(tenant, r) => {
                max_id = max_id.max(Some(r.id.0));
                opened.insert(r.id, (tenant, r));
            }
            Write::Closed(id) => {
                if opened.remove(&id).is_none() {
                    closed.push(id);
                }
            }
            Write::Totals(tenant, t) => {
                totals.insert((tenant, t.start_ms), t);
            }
        }
    }
    let txn = db.begin_write().map_err(text)?;
    {
        let mut open = txn.open_table(OPEN).map_err(text)?;
        for (tenant, r) in opened.values() {
            let row = (
                tenant.as_str(),
                r.cost.get(),
                r.tokens,
                r.minute,
                r.period_start_ms,
                r.expires_at_ms,
            );
            open.insert(r.id.0, row).map_err(text)?;
        }
        for id in closed {
            open.remove(id.0).map_err(text)?;
        }
        let mut periods = txn.open_table(PERIODS).map_err(text)?;
        for ((tenant, start_ms), t) in &totals {
            periods
                .insert(
                    (tenant.as_str(), *start_ms),
                    (t.end_ms, t.spent.get(), t.used_tokens, t.calls),
                )
                .map_err(text)?;
        }
        if let Some(max_id) = max_id.filter(|id| *id >= *id_ceiling) {
            let ceiling = max_id.saturating_add(ID_BLOCK);
            txn.open_table(META)
                .map_err(text)?
                .insert("next_id", ceiling)
                .map_err(text)?;
            *id_ceiling = ceiling;
        }
    }
    txn.commit().map_err(text)?;
    Ok(())
}

/// redb's errors as text: they are reported, not matched on.
fn text(e: impl Into<redb::Error>) -> String {
    e.into().to_string()
}

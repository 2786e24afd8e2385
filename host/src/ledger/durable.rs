//! The durable store: an embedded redb database behind an in-memory image.
//! Reads and admission decisions use the image (no disk I/O on the request
//! path); every change is written through in order by a group committer. A
//! settle returns only once its charge is on disk, so `kill -9` loses no
//! settled charge. Reservations and releases are written through without
//! waiting: after a crash an open reservation still holds its money until it
//! expires, and one whose write was lost holds nothing, which is harmless as
//! its caller died with the process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::book::{Books, Change, lock};
use super::book_store::{BookStore, Journal};
use super::error::StoreError;
use super::group_commit::{GroupCommit, Ticket};
use super::period::PeriodTotals;
use super::reservation::{OpenReservation, ReservationId};

/// "next_id": a ceiling above every reservation id issued and persisted.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (tenant, period start) → (period end, spent, used tokens, calls).
const PERIODS: TableDefinition<(&str, u64), (u64, u64, u64, u64)> = TableDefinition::new("periods");
/// id → (tenant, cost, tokens, minute, period start, expires at).
const OPEN: TableDefinition<u64, (&str, u64, u64, u64, u64, u64)> = TableDefinition::new("open_reservations");

/// Ids are persisted as a ceiling raised a block at a time, so most commits
/// need not touch the meta table.
const ID_BLOCK: u64 = 1 << 20;

/// One change, as the committer writes it.
pub enum Write {
    Opened(TenantId, OpenReservation),
    Closed(ReservationId),
    Totals(TenantId, PeriodTotals),
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

    fn enqueue(&self, entries: Vec<Write>, wait: bool) -> Result<Ticket, StoreError> {
        self.committer.enqueue(entries, wait)
    }

    fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.committer.wait(ticket)
    }
}

/// Tenants' books in memory, written through to redb.
pub type DurableStore = BookStore<Redb>;

impl BookStore<Redb> {
    /// Open (or create) the database at `path` and load it into memory.
    /// Reservations that expired by `now_ms` are expired now.
    pub fn open(path: impl AsRef<Path>, now_ms: u64) -> Result<Self, StoreError> {
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
        let books = Books::default();
        let mut next_id = 1;
        let txn = db.begin_write().map_err(|e| err("starting the load transaction")(&e))?;
        {
            let loading = err("loading");
            let mut meta = txn.open_table(META).map_err(|e| loading(&e))?;
            let periods = txn.open_table(PERIODS).map_err(|e| loading(&e))?;
            let mut open = txn.open_table(OPEN).map_err(|e| loading(&e))?;
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
            let mut expired = Vec::new();
            for row in open.iter().map_err(|e| loading(&e))? {
                let (key, value) = row.map_err(|e| loading(&e))?;
                let id = key.value();
                next_id = next_id.max(id.saturating_add(1));
                let (name, cost, tokens, minute, period_start_ms, expires_at_ms) = value.value();
                if expires_at_ms <= now_ms {
                    expired.push(id);
                    continue;
                }
                let r = OpenReservation {
                    id: ReservationId(id),
                    cost: NanoUsd(cost),
                    ceiling: NanoUsd(cost),
                    tokens,
                    minute,
                    period_start_ms,
                    expires_at_ms,
                };
                lock(&books.get(&tenant(name)?)).restore_open(r);
            }
            for id in expired {
                open.remove(id).map_err(|e| loading(&e))?;
            }
            meta.insert("next_id", next_id.saturating_add(ID_BLOCK))
                .map_err(|e| loading(&e))?;
        }
        txn.commit().map_err(|e| err("committing the load")(&e))?;

        let commit_err = err("committing");
        let mut id_ceiling = next_id.saturating_add(ID_BLOCK);
        let commit =
            Box::new(move |batch: Vec<Write>| write_batch(&db, batch, &mut id_ceiling).map_err(|e| commit_err(&e)));
        let committer =
            GroupCommit::start("tollgate-ledger-commit", commit).map_err(|e| err("starting the committer")(&e))?;
        Ok(BookStore::from_parts(books, next_id, Redb { committer, path }))
    }

    pub fn path(&self) -> &Path {
        &self.journal().path
    }
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

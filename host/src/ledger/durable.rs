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
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableTable, TableDefinition};

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::book::{Books, Change, TenantBook, lock};
use super::error::{LedgerError, ReserveError, StoreError};
use super::group_commit::{GroupCommit, Ticket};
use super::limits::TenantLimits;
use super::period::PeriodTotals;
use super::reservation::{Actual, OpenReservation, Released, Reservation, ReservationId, ReserveRequest, Settled};
use super::store::{LedgerStore, TenantLedgerState};

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
enum Write {
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

pub struct DurableStore {
    books: Books,
    next_id: AtomicU64,
    committer: GroupCommit<Write>,
    path: PathBuf,
}

impl DurableStore {
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
        Ok(DurableStore {
            books,
            next_id: AtomicU64::new(next_id),
            committer,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `op` on the tenant's book, queueing its changes in the order made.
    /// A ticket comes back when `durable(&result)`: the caller must wait for it.
    fn with_book<R>(
        &self,
        tenant: &TenantId,
        durable: fn(&R) -> bool,
        op: impl FnOnce(&mut TenantBook, &mut dyn FnMut(Change<'_>)) -> R,
    ) -> Result<(R, Option<Ticket>), StoreError> {
        self.committer.check()?;
        let book = self.books.get(tenant);
        let mut book = lock(&book);
        let mut writes = Vec::new();
        let result = op(&mut book, &mut |change| writes.push(Write::from_change(tenant, change)));
        // Queued under the book's lock, so one tenant's writes stay in order.
        if writes.is_empty() {
            return Ok((result, None));
        }
        let wait = durable(&result);
        let ticket = self.committer.enqueue(writes, wait)?;
        Ok((result, wait.then_some(ticket)))
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

impl LedgerStore for DurableStore {
    fn reserve(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<Reservation, ReserveError> {
        let id = ReservationId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (open, _) = self.with_book(
            tenant,
            |_| false,
            |book, sink| book.reserve(limits, request, id, ttl_ms, sink),
        )?;
        Ok(Reservation::from(&open?))
    }

    fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let (settled, ticket) = self.with_book(tenant, Result::is_ok, |book, sink| {
            book.settle(limits, id, actual, now_ms, sink)
        })?;
        let settled = settled?;
        // Wait outside the book's lock: the tenant's other calls go on.
        if let Some(ticket) = ticket {
            self.committer.wait(ticket)?;
        }
        Ok(settled)
    }

    fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        let (released, _) = self.with_book(tenant, |_| false, |book, sink| book.release(limits, id, now_ms, sink))?;
        released
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        self.committer.check()?;
        let mut expired = 0;
        for book in self.books.all() {
            let mut book = lock(&book);
            let mut writes = Vec::new();
            expired += book.expire(now_ms, &mut |change| {
                if let Change::Closed(id) = change {
                    writes.push(Write::Closed(id));
                }
            });
            if !writes.is_empty() {
                self.committer.enqueue(writes, false)?;
            }
        }
        Ok(expired)
    }

    fn load(&self, tenant: &TenantId, limits: &TenantLimits, now_ms: u64) -> Result<TenantLedgerState, StoreError> {
        let (state, _) = self.with_book(tenant, |_| false, |book, sink| book.state(limits, now_ms, sink))?;
        Ok(state)
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, StoreError> {
        Ok(lock(&self.books.get(tenant)).history())
    }
}

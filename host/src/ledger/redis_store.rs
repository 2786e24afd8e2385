//! The shared ledger of a fleet of replicas, in Redis or Valkey. Each
//! operation is one run of `ledger.lua`, atomic where the data lives, so
//! replicas never hold a tenant's figures of their own: the budget, the
//! periods, the holds and the RPM/TPM minutes are one for the whole fleet.
//!
//! * A tenant's keys share its hash tag (`<prefix>:{<tenant>}:…`), so the
//!   store works on a Redis Cluster slot by slot.
//! * Reservation ids come from the tenant's own counter in Redis, started at
//!   a random point: unique across replicas and restarts, and another
//!   tenant's id names nothing.
//! * A settle whose answer is lost (a timeout, a dropped connection) is
//!   retried with a flag that makes the script return the first outcome
//!   instead of charging twice. One that still cannot reach Redis is kept in
//!   [`outbox`] and written when Redis answers again.
//! * Each hold names the replica that took it; a replica whose lease
//!   lapses (it died during its calls) has its holds adopted and charged by
//!   another ([`lease`]). Each settle and release names its replica, so the
//!   script can tell the first owner's outcome, which then amends the
//!   adopter's charge, from the adopter's own retry.
//! * Every command's outcome feeds the health view, and a half-second
//!   probe follows Redis both ways ([`exchange`]).
//! * The request path uses the async form (a multiplexed connection that
//!   reconnects by itself); the blocking form, for tools and the expiry
//!   sweep, uses a small pool of plain connections.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation};

use crate::ids::TenantId;
use crate::money::NanoUsd;

use super::error::{LedgerError, ReserveError, StoreError};
use super::limits::TenantLimits;
use super::period::PeriodTotals;
use super::reservation::{Actual, Released, Reservation, ReservationId, ReserveRequest, Settled};
use super::store::{
    AsyncLedgerStore, LedgerStore, RestoredHold, SeriesKeep, SpendSeries, StoreFuture, TenantLedgerState,
};

mod allowance;
mod exchange;
mod journal;
mod lease;
mod memory;
mod outbox;
mod reply;

use allowance::Allowance;
use journal::Journal;
use lease::Lease;
use memory::MemoryWatch;
pub use memory::RedisMemory;
use outbox::{Outbox, Pending};

const LEDGER_LUA: &str = include_str!("redis_store/ledger.lua");

/// Where the store connects and how long it waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Put before every key, so deployments can share one Redis.
    pub key_prefix: String,
    /// The most one operation waits for an answer (and a connection attempt).
    pub timeout: Duration,
    /// How long a settle or release retries before it is kept for later.
    pub retry_for: Duration,
    /// How long a replica's holds outlive its last renewed lease before
    /// another replica adopts and charges them (see `lease`).
    pub lease: Duration,
    /// `None`: fail closed while Redis does not answer. `Some`: admit each
    /// tenant's calls up to this much per replica and outage (see `allowance`).
    pub allowance: Option<NanoUsd>,
    /// The local file that keeps, until Redis has them, the calls admitted
    /// on the allowance and the outcomes of calls Redis held that could not
    /// be written, so a replica killed during an outage charges them at its
    /// next start (see `journal`). `None` keeps them in memory only.
    pub journal: Option<std::path::PathBuf>,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "tollgate".into(),
            timeout: Duration::from_millis(500),
            retry_for: Duration::from_secs(2),
            lease: Duration::from_secs(10),
            allowance: None,
            journal: None,
        }
    }
}

/// The ledger in Redis. Cheap to share; needs a Tokio runtime to be built.
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL without its password, for messages.
    name: String,
    prefix: String,
    settings: RedisSettings,
    script: Script,
    client: redis::Client,
    conn: ConnectionManager,
    blocking: Mutex<Vec<redis::Connection>>,
    /// Tenants this replica has seen, for the expiry sweep and the adoption
    /// pass, in a stable order.
    tenants: RwLock<BTreeSet<TenantId>>,
    /// Whether the last exchange with Redis worked (the health probe's view).
    /// False until Redis first answers, so a replica started while Redis
    /// hangs is not ready before its first probe ends.
    up: AtomicBool,
    /// Whether the probe's last `PING` was answered. While it was not, calls
    /// fail fast (closed, or onto the allowance) instead of each waiting
    /// for a connection that is not there.
    reachable: AtomicBool,
    /// Woken after each probe and each written kept change: health may have changed.
    health: tokio::sync::Notify,
    last_error: Mutex<String>,
    outbox: Outbox,
    allowance: Option<Allowance>,
    /// Where kept changes outlive this process (see `journal`).
    journal: Option<Arc<Journal>>,
    /// Why the journal refused a change kept since the outbox was last empty.
    journal_failure: Mutex<Option<String>>,
    /// Redis' memory as the probe last read it.
    memory: MemoryWatch,
    lease: Lease,
    /// Calls a killed process let through on its allowance and never
    /// finished, found in its journal: charged their holds like adopted ones.
    recovered: Mutex<Vec<RestoredHold>>,
}

impl RedisStore {
    /// Builds the store without waiting for Redis: a replica may start while
    /// Redis is down, and its calls are refused until Redis answers. Must be
    /// called inside a Tokio runtime (it starts the connection's tasks and a
    /// probe that also writes kept charges).
    pub fn connect(settings: RedisSettings) -> Result<Self, StoreError> {
        let name = redacted(&settings.url);
        let bad = |detail: String| StoreError::Remote {
            store: name.clone(),
            action: "the connection settings",
            detail,
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(bad(
                "the Redis store needs a Tokio runtime: build it from within one (for example in `#[tokio::main]`)"
                    .into(),
            ));
        }
        if settings.key_prefix.is_empty() || settings.key_prefix.contains(['{', '}']) {
            return Err(bad(format!(
                "key prefix {:?} must be non-empty and free of braces (they would break the per-tenant hash tag)",
                settings.key_prefix
            )));
        }
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| bad(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| bad(e.to_string()))?;
        let (journal, owed) = match &settings.journal {
            Some(path) => {
                let (journal, owed) = Journal::open(path)?;
                if settings.allowance.is_none() {
                    journal::refuse_allowance_owed(path, &owed)?;
                }
                (Some(journal), owed)
            }
            None => (None, journal::Owed::default()),
        };
        let allowance = settings.allowance.map(|limit| Allowance::new(limit, journal.clone()));
        let settings_lease = settings.lease;
        let inner = Arc::new(Inner {
            name,
            prefix: settings.key_prefix.clone(),
            settings,
            script: Script::new(LEDGER_LUA),
            client,
            conn,
            blocking: Mutex::new(Vec::new()),
            tenants: RwLock::new(BTreeSet::new()),
            up: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            health: tokio::sync::Notify::new(),
            last_error: Mutex::new("it has not answered since this process started".into()),
            outbox: Outbox::default(),
            allowance,
            journal,
            journal_failure: Mutex::new(None),
            memory: MemoryWatch::default(),
            lease: Lease::new(settings_lease),
            recovered: Mutex::new(Vec::new()),
        });
        inner.owed(owed);
        tokio::spawn(exchange::probe(Arc::downgrade(&inner)));
        Ok(RedisStore { inner })
    }

    /// Charges kept because Redis did not answer, not yet written.
    pub fn deferred(&self) -> usize {
        self.inner.outbox.len()
    }

    /// Resolves once every kept charge has been written.
    pub async fn drained(&self) {
        self.inner.outbox.drained().await;
    }

    /// Redis' memory against its `maxmemory`, as the probe last read it;
    /// `None` before the first read, or where `INFO` is refused.
    pub fn memory(&self) -> Option<RedisMemory> {
        self.inner.memory.last()
    }

    /// One health check (`PING`, then `ROLE`): `Ok` when Redis answered as
    /// a primary (and readiness follows).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
}

impl Inner {
    fn keys<'s>(&self, invocation: &mut ScriptInvocation<'s>, tenant: &TenantId) {
        let base = format!("{}:{{{}}}:", self.prefix, tenant.as_str());
        for part in [
            "state", "open", "exp", "periods", "pidx", "expired", "expidx", "done", "doneidx", "burnm", "burnh",
            "amendidx",
        ] {
            invocation.key(format!("{base}{part}"));
        }
    }

    /// The script's call: its keys, then op, now, basis, period bounds.
    fn invocation(
        &self,
        tenant: &TenantId,
        op: &str,
        limits: Option<&TenantLimits>,
        now_ms: u64,
    ) -> ScriptInvocation<'_> {
        let mut invocation = self.script.prepare_invoke();
        self.keys(&mut invocation, tenant);
        invocation.arg(op).arg(now_ms);
        match limits {
            Some(limits) => {
                let bounds = limits.period.containing(limits.time_zone, now_ms);
                invocation
                    .arg(format!("{}|{}", limits.period.name(), limits.time_zone.name()))
                    .arg(bounds.start_ms)
                    .arg(bounds.end_ms);
            }
            None => {
                invocation.arg("").arg(0).arg(0);
            }
        }
        invocation
    }

    /// The tenants this replica has seen or was configured with.
    fn tenants(&self) -> Vec<TenantId> {
        self.tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    fn seen(&self, tenant: &TenantId) {
        if !self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(tenant)
        {
            self.tenants
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(tenant.clone());
        }
    }

    /// Settles, retrying a lost answer (the script returns the first
    /// outcome rather than charging twice), until `retry_for` passes.
    async fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        self.seen(tenant);
        if id.is_local() {
            let (deferred, settled) = self.settle_local(tenant, limits, id, actual, now_ms);
            self.journal(settled).await;
            // Redis may be back (a killed process's call, charged at the next
            // start): then the charge is written now, not at the next probe.
            if self.reachable.load(Ordering::Acquire) {
                self.flush().await;
            }
            return Err(deferred);
        }
        let args = |invocation: &mut ScriptInvocation<'_>| {
            invocation.arg(id.0).arg(actual.cost.get()).arg(actual.tokens);
        };
        match self.closing(tenant, limits, "settle", now_ms, args).await? {
            Closing::Answer(answer) => reply::settled(&self.name, tenant, id, &answer),
            Closing::GaveUp(detail) => {
                self.keep_journalled(Pending::Settle {
                    tenant: tenant.clone(),
                    limits: *limits,
                    id,
                    actual,
                    now_ms,
                    owner: None,
                })
                .await;
                Err(LedgerError::Deferred {
                    tenant: tenant.clone(),
                    id,
                    charge: actual.cost,
                    detail,
                })
            }
        }
    }

    /// Runs a settle or release, retrying a lost answer with the flag that
    /// makes the script return the first outcome, until `retry_for` passes.
    async fn closing(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        op: &str,
        now_ms: u64,
        args: impl Fn(&mut ScriptInvocation<'_>),
    ) -> Result<Closing, StoreError> {
        let started = tokio::time::Instant::now();
        let mut retry = false;
        let mut pause = Duration::from_millis(20);
        loop {
            let mut invocation = self.invocation(tenant, op, Some(limits), now_ms);
            args(&mut invocation);
            invocation.arg(if retry { "1" } else { "0" }).arg(&self.lease.owner);
            match self.run_async::<Vec<String>>(invocation).await {
                Ok(answer) => return Ok(Closing::Answer(answer)),
                Err(StoreError::Unavailable { detail, .. }) => {
                    if started.elapsed() >= self.settings.retry_for {
                        return Ok(Closing::GaveUp(detail));
                    }
                    retry = true;
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    async fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        self.seen(tenant);
        if id.is_local() {
            let (released, entry) = self.release_local(tenant, id)?;
            self.journal(Some(entry)).await;
            return Ok(released);
        }
        let args = |invocation: &mut ScriptInvocation<'_>| {
            invocation.arg(id.0);
        };
        match self.closing(tenant, limits, "release", now_ms, args).await? {
            Closing::Answer(answer) => reply::released(&self.name, tenant, id, &answer),
            Closing::GaveUp(detail) => {
                // Kept too: until it is written the hold only lowers what the tenant may spend.
                self.keep_journalled(Pending::Release {
                    tenant: tenant.clone(),
                    limits: *limits,
                    id,
                    now_ms,
                    owner: None,
                })
                .await;
                Err(LedgerError::ReleaseDeferred {
                    tenant: tenant.clone(),
                    id,
                    detail,
                })
            }
        }
    }
}

/// Where a tenant's reservation ids start (used once per tenant): random
/// below 2^50, so ids stay exact in Lua's doubles and far from
/// `allowance`'s local bit.
fn first_id(tenant: &TenantId, now_ms: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((tenant, now_ms)) & ((1 << 50) - 1)
}

/// How a settle or release ended: Redis' answer, or no answer in time.
enum Closing {
    Answer(Vec<String>),
    GaveUp(String),
}

/// The URL with any password replaced, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split_once(':').map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

impl LedgerStore for RedisStore {
    fn reserve(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> Result<Reservation, ReserveError> {
        let inner = &self.inner;
        inner.seen(tenant);
        inner.lease_before_blocking()?;
        let invocation = reserve_call(inner, tenant, limits, &request, ttl_ms);
        let answer: Vec<String> = inner.run_blocking(invocation)?;
        reply::reserved(&inner.name, limits, &request, &answer)
    }

    fn settle(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> Result<Settled, LedgerError> {
        let inner = &self.inner;
        inner.seen(tenant);
        if id.is_local() {
            let (deferred, settled) = inner.settle_local(tenant, limits, id, actual, now_ms);
            inner.journal_blocking(settled);
            return Err(deferred);
        }
        let mut invocation = inner.invocation(tenant, "settle", Some(limits), now_ms);
        invocation
            .arg(id.0)
            .arg(actual.cost.get())
            .arg(actual.tokens)
            .arg("0")
            .arg(&inner.lease.owner);
        let answer: Vec<String> = inner.run_blocking(invocation)?;
        reply::settled(&inner.name, tenant, id, &answer)
    }

    fn release(
        &self,
        tenant: &TenantId,
        limits: &TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> Result<Released, LedgerError> {
        let inner = &self.inner;
        inner.seen(tenant);
        if id.is_local() {
            let (released, entry) = inner.release_local(tenant, id)?;
            inner.journal_blocking(Some(entry));
            return Ok(released);
        }
        let mut invocation = inner.invocation(tenant, "release", Some(limits), now_ms);
        invocation.arg(id.0).arg("0").arg(&inner.lease.owner);
        let answer: Vec<String> = inner.run_blocking(invocation)?;
        reply::released(&inner.name, tenant, id, &answer)
    }

    fn expire(&self, now_ms: u64) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let mut expired = 0;
        for tenant in inner.tenants() {
            let n: usize = inner.run_blocking(inner.invocation(&tenant, "expire", None, now_ms))?;
            expired += n;
        }
        Ok(expired)
    }

    fn load(&self, tenant: &TenantId, limits: &TenantLimits, now_ms: u64) -> Result<TenantLedgerState, StoreError> {
        let inner = &self.inner;
        inner.seen(tenant);
        let answer: Vec<String> = inner.run_blocking(inner.invocation(tenant, "load", Some(limits), now_ms))?;
        let state = reply::state(&inner.name, limits, &answer)?;
        // Figures learned here (the admin API reads this way) serve an outage too.
        if let Some(allowance) = &inner.allowance {
            allowance.remember(tenant, &state);
        }
        Ok(state)
    }

    fn history(&self, tenant: &TenantId) -> Result<Vec<PeriodTotals>, StoreError> {
        let inner = &self.inner;
        let answer: Vec<String> = inner.run_blocking(inner.invocation(tenant, "history", None, 0))?;
        reply::history(&inner.name, &answer)
    }

    fn may_block(&self) -> bool {
        true
    }

    /// Ready once Redis answers and every kept charge is written, so the
    /// figures a ready replica shows are the fleet's whole ledger.
    fn health(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let detail = if !inner.up.load(Ordering::Acquire) {
            inner.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
        } else {
            let kept = match inner.outbox.len() {
                0 => return Ok(()),
                1 => "1 charge it was away for, or refused, is kept here and not written yet".to_owned(),
                kept => format!("{kept} charges it was away for, or refused, are kept here and not written yet"),
            };
            match &*inner.journal_failure.lock().unwrap_or_else(PoisonError::into_inner) {
                Some(why) => format!(
                    "{kept}; its journal could not keep them ({why}), so they are lost if this process stops \
                     before Redis has them"
                ),
                None => kept,
            }
        };
        Err(StoreError::Unavailable {
            store: inner.name.clone(),
            detail,
        })
    }

    fn remote(&self) -> Option<&dyn AsyncLedgerStore> {
        Some(self)
    }

    fn fails_open(&self) -> bool {
        self.inner.allowance.is_some()
    }

    fn health_signal(&self) -> Option<&tokio::sync::Notify> {
        Some(&self.inner.health)
    }

    /// Holds adopted from replicas whose lease lapsed.
    fn take_restored(&self) -> Vec<RestoredHold> {
        let mut holds = std::mem::take(&mut *self.inner.recovered.lock().unwrap_or_else(PoisonError::into_inner));
        holds.extend(self.inner.lease.take_adopted());
        holds
    }

    fn restored_signal(&self) -> Option<&tokio::sync::Notify> {
        Some(&self.inner.lease.signal)
    }

    fn track(&self, tenant: &TenantId) {
        self.inner.seen(tenant);
    }
}

fn reserve_call<'s>(
    inner: &'s Inner,
    tenant: &TenantId,
    limits: &TenantLimits,
    request: &ReserveRequest,
    ttl_ms: u64,
) -> ScriptInvocation<'s> {
    let ceiling = request.ceiling.unwrap_or(request.cost).max(request.cost);
    let mut invocation = inner.invocation(tenant, "reserve", Some(limits), request.now_ms);
    invocation
        .arg(request.cost.get())
        .arg(ceiling.saturating_sub(request.cost).get())
        .arg(request.tokens)
        .arg(ttl_ms)
        .arg(limits.budget.get())
        .arg(limits.rpm.map(|n| n.to_string()).unwrap_or_default())
        .arg(limits.tpm.map(|n| n.to_string()).unwrap_or_default())
        .arg(first_id(tenant, request.now_ms))
        .arg(&inner.lease.owner);
    invocation
}

impl AsyncLedgerStore for RedisStore {
    fn reserve<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        request: ReserveRequest,
        ttl_ms: u64,
    ) -> StoreFuture<'a, Result<Reservation, ReserveError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.seen(tenant);
            // No hold under a stale lease: another replica could adopt it while it runs.
            let answer: Result<Vec<String>, StoreError> = match inner.lease_before().await {
                Ok(()) => {
                    inner
                        .run_async(reserve_call(inner, tenant, limits, &request, ttl_ms))
                        .await
                }
                Err(e) => Err(e),
            };
            match (answer, &inner.allowance) {
                (Ok(answer), _) => reply::reserved(&inner.name, limits, &request, &answer),
                (Err(e @ StoreError::Unavailable { .. }), Some(allowance)) => {
                    let (reservation, opened) = allowance.reserve(tenant, &request, ttl_ms, e)?;
                    // On disk before the call is sent, or the call is not sent.
                    if let Some(journal) = allowance.journal()
                        && let Err(why) = journal.append_synced(opened).await
                    {
                        allowance.release(tenant, reservation.id);
                        return Err(ReserveError::Store(StoreError::Unavailable {
                            store: inner.name.clone(),
                            detail: format!("{why}; so no call is admitted on the local allowance"),
                        }));
                    }
                    Ok(reservation)
                }
                (Err(e), _) => Err(e.into()),
            }
        })
    }

    fn settle<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        id: ReservationId,
        actual: Actual,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<Settled, LedgerError>> {
        Box::pin(self.inner.settle(tenant, limits, id, actual, now_ms))
    }

    fn release<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        id: ReservationId,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<Released, LedgerError>> {
        Box::pin(self.inner.release(tenant, limits, id, now_ms))
    }

    fn load<'a>(
        &'a self,
        tenant: &'a TenantId,
        limits: &'a TenantLimits,
        now_ms: u64,
    ) -> StoreFuture<'a, Result<TenantLedgerState, StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            inner.seen(tenant);
            let answer: Result<Vec<String>, StoreError> = inner
                .read_async(inner.invocation(tenant, "load", Some(limits), now_ms))
                .await;
            match (answer, &inner.allowance) {
                (Ok(answer), allowance) => {
                    let state = reply::state(&inner.name, limits, &answer)?;
                    if let Some(allowance) = allowance {
                        allowance.remember(tenant, &state);
                    }
                    Ok(state)
                }
                // Policies decide on the last figures, with this replica's local spend added.
                (Err(e @ StoreError::Unavailable { .. }), Some(allowance)) => allowance.state(tenant).ok_or(e),
                (Err(e), _) => Err(e),
            }
        })
    }

    fn spend_series<'a>(
        &'a self,
        tenant: &'a TenantId,
        now_ms: u64,
        keep: SeriesKeep,
    ) -> StoreFuture<'a, Result<Option<SpendSeries>, StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut invocation = inner.invocation(tenant, "burn", None, now_ms);
            invocation.arg(keep.minutes).arg(keep.hours);
            let answer: Vec<Vec<String>> = inner.read_async(invocation).await?;
            reply::series(&inner.name, &answer).map(Some)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("rediss://app:s3cret@cache:6380"),
            "rediss://app:***@cache:6380"
        );
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}

//! Which replica holds what. Each hold names the replica that took it (its
//! owner id, new for each process). A replica renews a lease on its id
//! while it reaches Redis; when a replica dies (`kill -9`, a lost machine)
//! its lease lapses, and another replica adopts its holds and charges them:
//! those calls may have run, and no settle will ever come for them.
//!
//! A replica adopts only once Redis has answered it for a whole lease, so
//! after an outage every live replica has renewed its own lease first.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::RedisError;

use crate::ids::TenantId;
use crate::ledger::error::StoreError;
use crate::ledger::reservation::ReservationId;
use crate::ledger::store::RestoredHold;
use crate::money::NanoUsd;

use super::Inner;

pub(super) struct Lease {
    /// `r` and 16 hex digits: never a number, so the script tells it from one.
    pub(super) owner: String,
    length: Duration,
    /// Since when Redis has answered every probe; `None` while it does not.
    answering_since: Mutex<Option<Instant>>,
    /// When the lease was last written. A hold is taken only while the
    /// lease is fresh (written within half its length), so no hold is ever
    /// written under a lapsed lease, even just after an outage.
    renewed_at: Mutex<Option<Instant>>,
    last_adoption: Mutex<Option<Instant>>,
    /// Holds adopted and not yet handed out to be charged.
    adopted: Mutex<Vec<RestoredHold>>,
    /// Woken when holds are adopted.
    pub(super) signal: tokio::sync::Notify,
}

impl Lease {
    pub(super) fn new(length: Duration) -> Lease {
        use std::hash::BuildHasher;
        let random = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), Instant::now()));
        Lease {
            owner: format!("r{random:016x}"),
            length,
            answering_since: Mutex::new(None),
            renewed_at: Mutex::new(None),
            last_adoption: Mutex::new(None),
            adopted: Mutex::new(Vec::new()),
            signal: tokio::sync::Notify::new(),
        }
    }

    fn key(prefix: &str, owner: &str) -> String {
        format!("{prefix}:replica:{owner}")
    }

    pub(super) fn take_adopted(&self) -> Vec<RestoredHold> {
        std::mem::take(&mut *self.adopted.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the lease was written within half its length.
    pub(super) fn is_fresh(&self) -> bool {
        self.renewed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < self.length / 2)
    }

    fn renewed(&self, at: Instant) {
        *self.renewed_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    /// Notes a probe's outcome; the lease counts Redis as answering from the
    /// first answer after a failure.
    pub(super) fn probed(&self, answered: bool) {
        let mut since = self.answering_since.lock().unwrap_or_else(PoisonError::into_inner);
        match (answered, *since) {
            (true, None) => *since = Some(Instant::now()),
            (false, _) => *since = None,
            (true, Some(_)) => {}
        }
    }

    /// Adoption is due: Redis answered for a whole lease, and the last
    /// adoption pass is half a lease ago.
    fn adoption_due(&self) -> bool {
        let steady = self
            .answering_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|since| since.elapsed() >= self.length);
        let mut last = self.last_adoption.lock().unwrap_or_else(PoisonError::into_inner);
        if !steady || last.is_some_and(|at| at.elapsed() < self.length / 2) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// Milliseconds since the epoch, for the script's clock argument.
pub(super) use crate::wall_clock::now_ms;

impl Inner {
    /// Writes the lease unless it is fresh: before each hold (the probe
    /// keeps it fresh, so this costs a round trip only after an outage).
    pub(super) async fn lease_before(&self) -> Result<(), StoreError> {
        if self.lease.is_fresh() {
            return Ok(());
        }
        self.renew_lease().await
    }

    /// [`lease_before`](Self::lease_before) for the blocking form.
    pub(super) fn lease_before_blocking(&self) -> Result<(), StoreError> {
        if self.lease.is_fresh() {
            return Ok(());
        }
        let sent = Instant::now();
        let mut conn = self.outcome(self.client.get_connection_with_timeout(self.settings.timeout))?;
        let answer: Result<(), RedisError> = self.lease_command().query(&mut conn);
        self.outcome(answer)?;
        self.lease.renewed(sent);
        Ok(())
    }

    fn lease_command(&self) -> redis::Cmd {
        let length = u64::try_from(self.lease.length.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(Lease::key(&self.prefix, &self.lease.owner))
            .arg(1)
            .arg("PX")
            .arg(length);
        cmd
    }

    /// Writes this replica's lease for one more lease length.
    pub(super) async fn renew_lease(&self) -> Result<(), StoreError> {
        // Timed from the send: the lease runs from no later than that.
        let sent = Instant::now();
        let mut conn = self.conn.clone();
        let answer: Result<(), RedisError> = self.lease_command().query_async(&mut conn).await;
        self.outcome(answer)?;
        self.lease.renewed(sent);
        Ok(())
    }

    /// Finds owners with holds whose lease lapsed and adopts their holds,
    /// for [`Lease::take_adopted`]; runs from the probe.
    pub(super) async fn adopt_lapsed(&self, now_ms: u64) {
        if !self.lease.adoption_due() {
            return;
        }
        let mut adopted = Vec::new();
        for tenant in self.tenants() {
            match self.adopt_from(&tenant, now_ms).await {
                Ok(holds) => adopted.extend(holds),
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "could not look for holds of lapsed replicas");
                    // Redis gone: the next pass tries again. Holds adopted so
                    // far are this replica's now, so they are still handed out.
                    if matches!(e, StoreError::Unavailable { .. }) {
                        break;
                    }
                    // One tenant's data refused: the others' holds are still adopted.
                }
            }
        }
        if !adopted.is_empty() {
            tracing::warn!(
                holds = adopted.len(),
                "adopted the holds of replicas whose lease lapsed; they are charged"
            );
            self.lease
                .adopted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(adopted);
            self.lease.signal.notify_waiters();
        }
    }

    async fn adopt_from(&self, tenant: &TenantId, now_ms: u64) -> Result<Vec<RestoredHold>, StoreError> {
        let mut owners = self.invocation(tenant, "owners", None, now_ms);
        owners.arg(&self.lease.owner);
        let owners: Vec<String> = self.run_async(owners).await?;
        let mut lapsed = Vec::new();
        for owner in owners {
            let mut conn = self.conn.clone();
            let alive: Result<bool, RedisError> = redis::cmd("EXISTS")
                .arg(Lease::key(&self.prefix, &owner))
                .query_async(&mut conn)
                .await;
            if !self.outcome(alive)? {
                lapsed.push(owner);
            }
        }
        if lapsed.is_empty() {
            return Ok(Vec::new());
        }
        let mut adopt = self.invocation(tenant, "adopt", None, now_ms);
        adopt.arg(&self.lease.owner);
        for owner in &lapsed {
            adopt.arg(owner);
        }
        let answer: Vec<String> = self.run_async(adopt).await?;
        answer
            .iter()
            .map(|line| {
                let mut words = line.split_whitespace().map(str::parse::<u64>);
                match (words.next(), words.next(), words.next()) {
                    (Some(Ok(id)), Some(Ok(cost)), Some(Ok(tokens))) => Ok(RestoredHold {
                        tenant: tenant.clone(),
                        id: ReservationId(id),
                        cost: NanoUsd(cost),
                        tokens,
                    }),
                    _ => Err(StoreError::Remote {
                        store: self.name.clone(),
                        action: "adopting the holds of a lapsed replica",
                        detail: format!("unexpected answer {line:?}"),
                    }),
                }
            })
            .collect()
    }
}

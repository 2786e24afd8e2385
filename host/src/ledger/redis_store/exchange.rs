//! Talking to Redis: each command's outcome, which also tells the health
//! view whether Redis answered; calls that fail fast while the probe finds
//! Redis away or read-only; and the probe itself.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{RedisError, ScriptInvocation};

use super::{Inner, RedisMemory, lease};
use crate::ledger::error::StoreError;

impl Inner {
    /// Records whether Redis answered, and turns its error into the store's.
    pub(super) fn outcome<T>(&self, result: Result<T, RedisError>) -> Result<T, StoreError> {
        match result {
            Ok(value) => {
                self.up.store(true, Ordering::Release);
                Ok(value)
            }
            Err(e) => Err(self.failed(&e)),
        }
    }

    pub(super) fn failed(&self, e: &RedisError) -> StoreError {
        let detail = e.to_string();
        if unanswered(e) {
            self.away(detail)
        } else if refused_unrun(e) {
            // Kept and tried again like an outage: nothing was applied.
            StoreError::Unavailable {
                store: self.name.clone(),
                detail,
            }
        } else {
            StoreError::Remote {
                store: self.name.clone(),
                action: "a ledger operation",
                detail,
            }
        }
    }

    pub(super) async fn run_async<T: redis::FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.invoke(invocation, false).await
    }

    /// As [`Self::run_async`], for an operation that changes nothing: tried
    /// once more when its connection turned out dead. After a short Redis
    /// restart, that the probe may not have seen, the shared connection
    /// fails its first command and reconnects for the next; a call's first
    /// read is then not refused for it.
    pub(super) async fn read_async<T: redis::FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.invoke(invocation, true).await
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
        again_if_dropped: bool,
    ) -> Result<T, StoreError> {
        self.check_reachable()?;
        let mut conn = self.conn.clone();
        let mut result = invocation.invoke_async(&mut conn).await;
        if again_if_dropped && matches!(&result, Err(e) if e.is_connection_dropped()) {
            result = invocation.invoke_async(&mut conn).await;
        }
        self.outcome(result)
    }

    /// `PING`, then whether Redis takes writes: a primary demoted to a
    /// replica (a failover) answers and refuses every write. Until it is a
    /// primary again it counts as away, so calls fail fast, charges are
    /// kept, and readiness says why. Sets what calls check first.
    pub(super) async fn check(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let answer: Result<String, RedisError> = redis::cmd("PING").query_async(&mut conn).await;
        let checked = match answer {
            // Redis answers a PING with MISCONF while it refuses writes for
            // a failed save, and with NOAUTH to a connection it no longer
            // knows: it is there, and cannot keep a charge.
            Err(e) if refused_unrun(&e) => Err(self.away(format!("it refuses this gateway's commands for now ({e})"))),
            answer => match self.outcome(answer.map(drop)) {
                Ok(()) => match read_only_role(&mut conn).await {
                    Some(role) => Err(self.away(format!(
                        "it answers as a read-only {role} and cannot keep a charge (a failover?)"
                    ))),
                    None => Ok(()),
                },
                Err(e) => Err(e),
            },
        };
        self.reachable.store(checked.is_ok(), Ordering::Release);
        checked
    }

    /// Reads `INFO memory` for the memory watch. A Redis that refuses
    /// `INFO` (an ACL, a managed service) is simply not watched.
    async fn read_memory(&self) {
        let mut conn = self.conn.clone();
        let info: Result<String, RedisError> = redis::cmd("INFO").arg("memory").query_async(&mut conn).await;
        match info.map(|text| RedisMemory::parse(&text)) {
            Ok(Some(memory)) => self.memory.seen(memory, &self.name, lease::now_ms()),
            Ok(None) => tracing::debug!("INFO memory named no used_memory and maxmemory"),
            Err(e) => tracing::debug!(error = %e, "Redis did not answer INFO memory"),
        }
    }

    /// Redis is away, or answers but cannot take a charge: counted as away
    /// until it answers again as a writable primary, with `detail` as
    /// readiness' reason.
    fn away(&self, detail: String) -> StoreError {
        self.up.store(false, Ordering::Release);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = detail.clone();
        StoreError::Unavailable {
            store: self.name.clone(),
            detail,
        }
    }

    /// While the probe's last check failed, calls fail fast.
    fn check_reachable(&self) -> Result<(), StoreError> {
        if self.reachable.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(StoreError::Unavailable {
            store: self.name.clone(),
            detail: format!(
                "it failed the last health probe ({})",
                self.last_error.lock().unwrap_or_else(PoisonError::into_inner)
            ),
        })
    }

    pub(super) fn run_blocking<T: redis::FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        // A pooled connection may have outlived its server (a restart): one
        // that does not answer a PING is replaced before anything is sent.
        let pooled = self
            .blocking
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn).is_ok().then_some(conn));
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                let conn = self.client.get_connection_with_timeout(self.settings.timeout);
                let conn = self.outcome(conn)?;
                // Best effort: a connection without them still answers, only slower to fail.
                let _ = conn.set_read_timeout(Some(self.settings.timeout));
                let _ = conn.set_write_timeout(Some(self.settings.timeout));
                conn
            }
        };
        let result = self.outcome(invocation.invoke(&mut conn));
        if result.is_ok() {
            self.blocking.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
        }
        result
    }
}

/// Every half second: `PING` (so readiness follows Redis both ways without
/// traffic), write any kept changes, renew the lease and adopt the holds of
/// lapsed replicas. Ends with the store.
pub(super) async fn probe(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let answered = inner.check().await.is_ok();
        if answered {
            inner.read_memory().await;
            inner.flush().await;
            if let Err(e) = inner.renew_lease().await {
                tracing::warn!(error = %e, "could not renew this replica's lease");
            }
        }
        inner.lease.probed(answered);
        if answered {
            inner.adopt_lapsed(lease::now_ms()).await;
        }
        inner.health.notify_waiters();
    }
}

/// `Some("replica")` when `ROLE` says Redis is a replica. A server that
/// does not answer `ROLE` (a managed service may not offer it) is taken at
/// its word that it is a primary: its writes still fail safely one by one.
async fn read_only_role(conn: &mut redis::aio::ConnectionManager) -> Option<&'static str> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await.ok()?;
    let name = match role.first()? {
        redis::Value::BulkString(bytes) => bytes.as_slice(),
        redis::Value::SimpleString(text) => text.as_bytes(),
        _ => return None,
    };
    matches!(name, b"slave" | b"replica").then_some("replica")
}

/// Whether the error leaves it unknown if Redis ran the command: no answer.
fn unanswered(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// Whether Redis answered that it cannot run commands for now, so the
/// command did nothing: a primary demoted to a read-only replica (a
/// failover), a server loading its data, a cluster without a primary for
/// the slot, a script still running, a server over `maxmemory`, one whose
/// last save failed (`MISCONF`: a full or broken disk), or a primary short
/// of the in-sync replicas it must write with (`NOREPLICAS`). A settle so
/// refused must be kept and written later, as in an outage, not dropped.
/// `OOM` is safe to retry: Redis refuses a script's write for memory only
/// while the script has written nothing yet, so the refusal aborts it
/// whole. `MISCONF` and `NOREPLICAS` refuse every write, so a script's first.
/// A connection that lost its authentication (`NOAUTH`: Redis restarted with
/// a password this gateway lacks) or a user the ACL no longer lets run the
/// script or touch its keys (`NOPERM`) is refused before the script starts:
/// every key a ledger script touches is declared, and Redis checks declared
/// keys and the command itself up front. A denial met inside a script comes
/// back as `ERR`, may follow earlier writes, and is not retried. To a
/// connection not yet let in, Redis refuses a command of many arguments
/// (a script's) as a protocol error before reading it, and hangs up; so it
/// does to a new connection past `maxclients`, before reading anything.
fn refused_unrun(e: &RedisError) -> bool {
    if e.code() == Some("ERR") {
        return e.detail().is_some_and(|detail| {
            detail.starts_with("Protocol error: unauthenticated") || detail.starts_with("max number of clients reached")
        });
    }
    matches!(
        e.code(),
        Some(
            "READONLY"
                | "LOADING"
                | "MASTERDOWN"
                | "TRYAGAIN"
                | "CLUSTERDOWN"
                | "BUSY"
                | "OOM"
                | "MISCONF"
                | "NOREPLICAS"
                | "NOAUTH"
                | "NOPERM"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::refused_unrun;

    /// Redis' reply, as the client parses it off the wire.
    fn reply(wire: &str) -> redis::RedisError {
        match redis::parse_redis_value(wire.as_bytes()).expect("a reply") {
            redis::Value::ServerError(e) => e.into(),
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn refusals_before_anything_ran_are_told_from_failures_that_may_follow_writes() {
        for unrun in [
            "-READONLY You can't write against a read only replica.\r\n",
            "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            "-NOAUTH Authentication required.\r\n",
            "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n",
            "-ERR Protocol error: unauthenticated multibulk length\r\n",
            "-ERR max number of clients reached\r\n",
        ] {
            assert!(refused_unrun(&reply(unrun)), "{unrun}");
        }
        for ran in [
            // An ACL denial met inside a script: earlier writes stand.
            "-ERR The user executing the script can't run this command or subcommand script: 45c4, on @user_script:1.\r\n",
            "-ERR Error running script (call to f_45c4): @user_script:3: a failure\r\n",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ] {
            assert!(!refused_unrun(&reply(ran)), "{ran}");
        }
    }
}

//! The fleet's dashboard sessions: one sorted set in Redis, the SHA-256 of
//! each id (hex) scored by its expiry in milliseconds since the epoch. Its
//! key shares the control store's hash tag, so it lives beside the tenants
//! it guards on a Redis Cluster. Expired members are dropped at each
//! sign-in, and the set is capped there as in memory.

use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::SessionError;

/// Drops expired sessions, makes room under the cap by pushing out the ones
/// closest to expiring, then adds the new one.
/// KEYS: the set. ARGV: now_ms, expiry_ms, cap, digest.
const OPEN: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3]) + 1
if over > 0 then redis.call('ZPOPMIN', KEYS[1], over) end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
return 1
"#;

pub(super) struct RedisSessions {
    conn: ConnectionManager,
    key: String,
    open: Script,
}

impl std::fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessions").field("key", &self.key).finish()
    }
}

impl RedisSessions {
    pub(super) fn new(url: &str, key_prefix: &str, timeout: Duration) -> Result<Self, SessionError> {
        let client = redis::Client::open(url).map_err(|e| SessionError(format!("the Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // A page waits on it: fail fast while Redis is away, as the ledger does.
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| SessionError(format!("connecting to Redis: {e}")))?;
        Ok(RedisSessions {
            conn,
            key: format!("{key_prefix}:{{control}}:dashboard-sessions"),
            open: Script::new(OPEN),
        })
    }

    pub(super) async fn open(
        &self,
        digest: &[u8; 32],
        now_ms: u64,
        expiry_ms: u64,
        cap: usize,
    ) -> Result<(), SessionError> {
        let mut open = self.open.key(&self.key);
        open.arg(now_ms).arg(expiry_ms).arg(cap).arg(hex::encode(digest));
        let mut conn = self.conn.clone();
        let mut result = open.invoke_async::<i64>(&mut conn).await;
        if result.as_ref().is_err_and(reconnected) {
            result = open.invoke_async::<i64>(&mut conn).await;
        }
        result.map(drop).map_err(|e| fail("opening a session", e))
    }

    /// The session's expiry, if it is kept.
    pub(super) async fn expiry(&self, digest: &[u8; 32]) -> Result<Option<u64>, SessionError> {
        let mut zscore = redis::cmd("ZSCORE");
        zscore.arg(&self.key).arg(hex::encode(digest));
        // Scores are doubles; milliseconds since the epoch are exact in them.
        let score: Option<f64> = self.query(&zscore).await.map_err(|e| fail("reading a session", e))?;
        Ok(score.map(|s| s as u64))
    }

    pub(super) async fn close(&self, digest: &[u8; 32]) -> Result<(), SessionError> {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&self.key).arg(hex::encode(digest));
        self.query::<i64>(&zrem)
            .await
            .map(drop)
            .map_err(|e| fail("signing out", e))
    }

    /// Runs an idempotent command, once more if the connection had been
    /// lost (Redis restarted): the first use after a restart then answers.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, redis::RedisError> {
        let mut conn = self.conn.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if reconnected(&e) => cmd.query_async(&mut conn).await,
            result => result,
        }
    }
}

/// An error after which the connection manager has reconnected, or tries to.
/// A refusal is one: the manager hands the first use after a restart the
/// refusal of its last attempt during the outage, so that use must ask again
/// (which is why a page waits twice the reconnect tries while Redis is away).
fn reconnected(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

fn fail(what: &str, e: redis::RedisError) -> SessionError {
    SessionError(format!("{what} in Redis: {e}"))
}

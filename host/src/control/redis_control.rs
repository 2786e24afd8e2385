//! The fleet's control store, in the same Redis as its ledger: components by
//! content, each tenant's policy record and tenant record. Every write is
//! announced on one pub/sub channel; a replica applies what it hears, and on
//! start or after a lost subscription reads the stored state rather than
//! trusting that it heard everything.
//!
//! Keys share one hash tag (`<prefix>:{control}:…`), so the scripts that
//! touch several of them work on a Redis Cluster:
//! * `components` HASH digest → bytes, `components:seen` ZSET digest by time;
//! * `policies` HASH tenant → [`PolicyRecord`] JSON;
//! * `tenants` HASH tenant → [`TenantRecord`] JSON.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::{Connection, RedisError, Script};

use super::{ControlError, ControlStore, PolicyRecord, TenantRecord};
use crate::ids::TenantId;
use crate::wall_clock::now_ms;

/// Components no policy record names are dropped once this old: long enough
/// for the replica that stored one to save the record naming it.
const UNNAMED_GRACE_MS: u64 = 10 * 60 * 1000;

/// Saves a policy record unless it would replace a version another replica
/// saved meanwhile (same number, other component), or go back in numbers;
/// announces it; drops components that no record names any more.
/// KEYS: policies, components, components:seen. ARGV: tenant, JSON, now_ms,
/// grace_ms, channel, message.
const SAVE_POLICIES: &str = r#"
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local new = cjson.decode(ARGV[2])
if stored then
  local old = cjson.decode(stored)
  if old['last-number'] > new['last-number'] then
    return redis.error_reply('CONFLICT version ' .. old['last-number'] .. ' was saved by another replica meanwhile')
  end
  local mine = {}
  for _, v in ipairs(new['versions']) do mine[v['number']] = v['digest'] end
  for _, v in ipairs(old['versions']) do
    local digest = mine[v['number']]
    if digest and digest ~= v['digest'] then
      return redis.error_reply('CONFLICT version ' .. v['number'] .. ' was saved by another replica meanwhile')
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local named = {}
for _, record in ipairs(redis.call('HVALS', KEYS[1])) do
  for _, v in ipairs(cjson.decode(record)['versions']) do named[v['digest']] = true end
end
local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
for _, digest in ipairs(old) do
  if not named[digest] then
    redis.call('HDEL', KEYS[2], digest)
    redis.call('ZREM', KEYS[3], digest)
  end
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 'OK'
"#;

/// A change announced on the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Policies(TenantId),
    Tenant(TenantId),
}

impl Change {
    fn message(&self) -> String {
        match self {
            Change::Policies(t) => format!("policies {t}"),
            Change::Tenant(t) => format!("tenant {t}"),
        }
    }

    /// `None` for a message this version does not know (a newer replica's).
    pub fn parse(message: &str) -> Option<Change> {
        let (kind, tenant) = message.split_once(' ')?;
        let tenant = TenantId::new(tenant).ok()?;
        match kind {
            "policies" => Some(Change::Policies(tenant)),
            "tenant" => Some(Change::Tenant(tenant)),
            _ => None,
        }
    }
}

pub struct RedisControl {
    client: redis::Client,
    name: String,
    base: String,
    timeout: Duration,
    conn: Mutex<Option<Connection>>,
    save: Script,
}

impl RedisControl {
    /// Connects lazily: the first operation opens the connection.
    pub fn new(url: &str, name: String, key_prefix: &str, timeout: Duration) -> Result<Self, ControlError> {
        let client = redis::Client::open(url).map_err(|e| ControlError {
            store: name.clone(),
            message: e.to_string(),
        })?;
        Ok(RedisControl {
            client,
            name,
            base: format!("{key_prefix}:{{control}}:"),
            timeout,
            conn: Mutex::new(None),
            save: Script::new(SAVE_POLICIES),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The store as messages name it (the URL, password hidden).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether Redis answers, within the timeout.
    pub fn ping(&self) -> Result<(), ControlError> {
        self.with("reaching Redis", |c| redis::cmd("PING").query::<String>(c))
            .map(drop)
    }

    /// The channel changes are announced on.
    pub fn channel(&self) -> String {
        format!("{}changes", self.base)
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.base)
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> ControlError {
        ControlError {
            store: self.name.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// Runs `op` on the connection, opening it first if needed; a failed
    /// connection is dropped so the next call opens a fresh one.
    fn with<T>(
        &self,
        what: &str,
        op: impl FnOnce(&mut Connection) -> Result<T, RedisError>,
    ) -> Result<T, ControlError> {
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection that outlived its server (a restart) is replaced before use.
        if let Some(conn) = slot.as_mut()
            && redis::cmd("PING").query::<String>(conn).is_err()
        {
            *slot = None;
        }
        if slot.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(self.timeout)
                .map_err(|e| self.fail(what, e))?;
            // Best effort: without them the connection still answers, only slower to fail.
            let _ = conn.set_read_timeout(Some(self.timeout));
            let _ = conn.set_write_timeout(Some(self.timeout));
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(self.fail(what, "no connection"));
        };
        let result = op(conn);
        if let Err(e) = &result
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
        {
            *slot = None;
        }
        result.map_err(|e| self.fail(what, e))
    }

    fn announce(&self, change: &Change) -> Result<(), ControlError> {
        let channel = self.channel();
        self.with("announcing a change", |c| {
            redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(change.message())
                .query::<i64>(c)
        })
        .map(drop)
    }

    /// One tenant's record, if kept.
    pub fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, ControlError> {
        let key = self.key("tenants");
        let json: Option<Vec<u8>> = self.with("reading a tenant", |c| {
            redis::cmd("HGET").arg(&key).arg(tenant.as_str()).query(c)
        })?;
        json.map(|json| {
            serde_json::from_slice(&json).map_err(|e| self.fail(&format!("tenant {tenant}'s record is unreadable"), e))
        })
        .transpose()
    }
}

impl ControlStore for RedisControl {
    fn put_component(&self, digest: &str, wasm: &[u8]) -> Result<(), ControlError> {
        let (components, seen) = (self.key("components"), self.key("components:seen"));
        self.with("writing a component", |c| {
            redis::pipe()
                .atomic()
                .cmd("HSETNX")
                .arg(&components)
                .arg(digest)
                .arg(wasm)
                .ignore()
                .cmd("ZADD")
                .arg(&seen)
                .arg(now_ms())
                .arg(digest)
                .ignore()
                .query::<()>(c)
        })
    }

    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, ControlError> {
        let key = self.key("components");
        self.with("reading a component", |c| {
            redis::cmd("HGET").arg(&key).arg(digest).query(c)
        })
    }

    fn policies(&self, tenant: &TenantId) -> Result<Option<PolicyRecord>, ControlError> {
        let key = self.key("policies");
        let json: Option<Vec<u8>> = self.with("reading policies", |c| {
            redis::cmd("HGET").arg(&key).arg(tenant.as_str()).query(c)
        })?;
        json.map(|json| {
            serde_json::from_slice(&json)
                .map_err(|e| self.fail(&format!("tenant {tenant}'s policy record is unreadable"), e))
        })
        .transpose()
    }

    fn tenants(&self) -> Result<Vec<(TenantId, TenantRecord)>, ControlError> {
        let key = self.key("tenants");
        let all: Vec<(String, Vec<u8>)> = self.with("reading tenants", |c| redis::cmd("HGETALL").arg(&key).query(c))?;
        all.into_iter()
            .map(|(id, json)| {
                let tenant = TenantId::new(&id).map_err(|e| self.fail("reading tenants", e))?;
                let record = serde_json::from_slice(&json)
                    .map_err(|e| self.fail(&format!("tenant {tenant}'s record is unreadable"), e))?;
                Ok((tenant, record))
            })
            .collect()
    }

    fn put_tenant(&self, tenant: &TenantId, record: Option<&TenantRecord>) -> Result<(), ControlError> {
        let key = self.key("tenants");
        match record {
            Some(record) => {
                let json = serde_json::to_vec(record).map_err(|e| self.fail("encoding a tenant", e))?;
                self.with("writing a tenant", |c| {
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg(tenant.as_str())
                        .arg(json)
                        .query::<()>(c)
                })?;
            }
            None => {
                self.with("writing a tenant", |c| {
                    redis::cmd("HDEL").arg(&key).arg(tenant.as_str()).query::<()>(c)
                })?;
            }
        }
        self.announce(&Change::Tenant(tenant.clone()))
    }

    fn save_policies(&self, tenant: &TenantId, record: &PolicyRecord) -> Result<(), ControlError> {
        let json = serde_json::to_string(record).map_err(|e| self.fail("encoding policies", e))?;
        let mut invocation = self.save.prepare_invoke();
        invocation
            .key(self.key("policies"))
            .key(self.key("components"))
            .key(self.key("components:seen"))
            .arg(tenant.as_str())
            .arg(json)
            .arg(now_ms())
            .arg(UNNAMED_GRACE_MS)
            .arg(self.channel())
            .arg(Change::Policies(tenant.clone()).message());
        self.with("writing policies", |c| invocation.invoke::<String>(c))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_read_back_and_unknown_ones_are_ignored() {
        let acme = TenantId::new("acme").unwrap();
        for change in [Change::Policies(acme.clone()), Change::Tenant(acme.clone())] {
            assert_eq!(Change::parse(&change.message()), Some(change));
        }
        assert_eq!(Change::parse("quota acme"), None);
        assert_eq!(Change::parse("tenant bad id"), None);
    }
}

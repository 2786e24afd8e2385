//! The fleet's control store as one replica uses it: Redis, plus a local
//! copy of what this replica last read from it or wrote to it (a redb file,
//! the same format as one gateway's store).
//!
//! The copy is what lets a replica start while Redis does not answer: it
//! then reads its tenants, policy records and components from the copy and
//! serves under `failure-mode` like the replicas already running. It stays
//! on the copy until the fleet follower reaches Redis again, which then
//! reads the stored state over it, as after any lost subscription.
//!
//! While on the copy, nothing can be changed: a write that would change
//! what the copy holds fails with an error that says why, and so does any
//! component's. A record written back unchanged (a start writing back the
//! state it just read) succeeds, so a replica whose `tollgate.toml` is as
//! it was when the copy was made starts, and one whose file changed is
//! refused until Redis answers.
//!
//! What Redis answers is written to the copy only where it differs, so a
//! replica's resync after a lost subscription costs reads of the copy, not
//! a commit per tenant.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ControlError, ControlStore, FileControl, PolicyRecord, RedisControl, TenantRecord};
use crate::ids::TenantId;

pub struct FleetControl {
    redis: RedisControl,
    copy: FileControl,
    /// Started while Redis did not answer, and not yet back on it.
    on_copy: AtomicBool,
}

/// How the replica found Redis at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reached {
    Redis,
    /// Redis did not answer (the error says how); the copy is used.
    Copy {
        why: String,
    },
}

impl FleetControl {
    /// Opens the copy at `copy` and asks Redis once. With Redis away, a
    /// copy that holds no tenant is an error: there is nothing to start on.
    pub fn open(redis: RedisControl, copy: &Path) -> Result<(FleetControl, Reached), ControlError> {
        let copy = FileControl::open(copy).map_err(|e| match e.message.contains("already open") {
            true => ControlError {
                message: format!(
                    "{}: another process has it; give each replica its own ([control] path)",
                    e.message
                ),
                ..e
            },
            false => e,
        })?;
        let reached = match redis.ping() {
            Ok(()) => Reached::Redis,
            Err(e) => {
                if copy.tenants()?.is_empty() {
                    return Err(ControlError {
                        store: e.store,
                        message: format!(
                            "{}; and this replica has no local copy of the fleet's tenants in {} (it is made \
                             on the first start with Redis), so it cannot start until Redis answers",
                            e.message,
                            copy.path().display()
                        ),
                    });
                }
                Reached::Copy { why: e.to_string() }
            }
        };
        let on_copy = AtomicBool::new(matches!(reached, Reached::Copy { .. }));
        Ok((FleetControl { redis, copy, on_copy }, reached))
    }

    pub fn redis(&self) -> &RedisControl {
        &self.redis
    }

    /// Whether reads come from the copy.
    pub fn on_copy(&self) -> bool {
        self.on_copy.load(Ordering::Acquire)
    }

    /// Redis answers again: reads go to it from now on. The caller then
    /// reads the whole stored state, which replaces what the copy gave.
    pub fn back_on_redis(&self) {
        if self.on_copy.swap(false, Ordering::AcqRel) {
            tracing::info!("the fleet's control store answers again; leaving the local copy");
        }
    }

    /// One tenant's record, if kept.
    pub fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantRecord>, ControlError> {
        if self.on_copy() {
            return self.copy.tenant(tenant);
        }
        let record = self.redis.tenant(tenant)?;
        if self.copy.tenant(tenant).ok().as_ref() != Some(&record) {
            self.mirror("a tenant", self.copy.put_tenant(tenant, record.as_ref()));
        }
        Ok(record)
    }

    /// A write the copy failed to take is logged, not returned: Redis has
    /// it, and the next read of it tries again. Only a start during an
    /// outage would miss it.
    fn mirror(&self, what: &str, result: Result<(), ControlError>) {
        if let Err(e) = result {
            tracing::warn!(error = %e, what, "could not update the local copy of the fleet's control store");
        }
    }

    /// The error of a change asked for while on the copy.
    fn unchanged_or_refused(&self, unchanged: bool, what: &str) -> Result<(), ControlError> {
        if unchanged {
            return Ok(());
        }
        Err(ControlError {
            store: self.redis.name().to_owned(),
            message: format!(
                "this replica started while Redis did not answer and runs on its local copy ({}); {what} \
                 cannot be changed until Redis answers again",
                self.copy.path().display()
            ),
        })
    }
}

impl ControlStore for FleetControl {
    fn put_component(&self, digest: &str, wasm: &[u8]) -> Result<(), ControlError> {
        if self.on_copy() {
            // Always refused, even when held: it comes first in every policy
            // change, so the change is refused before it takes effect here.
            return self.unchanged_or_refused(false, "the policies");
        }
        self.redis.put_component(digest, wasm)?;
        self.mirror("a component", self.copy.put_component(digest, wasm));
        Ok(())
    }

    fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, ControlError> {
        if self.on_copy() {
            return self.copy.component(digest);
        }
        let bytes = self.redis.component(digest)?;
        if let Some(bytes) = &bytes
            && !matches!(self.copy.component(digest), Ok(Some(_)))
        {
            self.mirror("a component", self.copy.put_component(digest, bytes));
        }
        Ok(bytes)
    }

    fn policies(&self, tenant: &TenantId) -> Result<Option<PolicyRecord>, ControlError> {
        if self.on_copy() {
            return self.copy.policies(tenant);
        }
        let record = self.redis.policies(tenant)?;
        if let Some(record) = &record
            && self.copy.policies(tenant).ok().flatten().as_ref() != Some(record)
        {
            self.mirror("a policy record", self.copy.save_policies(tenant, record));
        }
        Ok(record)
    }

    fn tenants(&self) -> Result<Vec<(TenantId, TenantRecord)>, ControlError> {
        if self.on_copy() {
            return self.copy.tenants();
        }
        let tenants = self.redis.tenants()?;
        if self.copy.tenants().ok().as_ref() != Some(&tenants) {
            self.mirror("the tenants", self.copy.replace_tenants(&tenants));
        }
        Ok(tenants)
    }

    fn put_tenant(&self, tenant: &TenantId, record: Option<&TenantRecord>) -> Result<(), ControlError> {
        if self.on_copy() {
            let held = self.copy.tenant(tenant)?;
            return self.unchanged_or_refused(held.as_ref() == record, &format!("tenant {tenant}"));
        }
        self.redis.put_tenant(tenant, record)?;
        self.mirror("a tenant", self.copy.put_tenant(tenant, record));
        Ok(())
    }

    fn check_writable(&self) -> Result<(), ControlError> {
        if self.on_copy() {
            return self.unchanged_or_refused(false, "the policies");
        }
        self.redis.ping()
    }

    fn save_policies(&self, tenant: &TenantId, record: &PolicyRecord) -> Result<(), ControlError> {
        if self.on_copy() {
            let held = self.copy.policies(tenant)?;
            return self.unchanged_or_refused(
                held.as_ref() == Some(record),
                &format!("tenant {tenant}'s policy versions"),
            );
        }
        self.redis.save_policies(tenant, record)?;
        self.mirror("a policy record", self.copy.save_policies(tenant, record));
        Ok(())
    }
}

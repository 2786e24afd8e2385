//! Many replicas, one ledger: the Redis store against a real `redis-server`
//! on loopback, alone and behind several `tollgate serve` processes. One test
//! binary, so the suite links once for them.

#[path = "../support/mod.rs"]
mod support;

mod admin_api;
mod adoption;
mod allowance_journal;
mod amend;
mod dashboard_sessions;
mod fleet_alerts;
mod fleet_registry;
mod journal_disk;
mod ledger_store;
mod memory;
mod replicas;
mod start_on_copy;
mod watched_dir;

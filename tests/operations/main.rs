//! Operating tollgate at runtime, end to end: the admin API and
//! `tollgate admin` against the real `tollgate serve`, with tenants calling
//! through the real AWS SDK. One test binary, so the suite links once.

#[path = "../support/mod.rs"]
mod support;

mod admin_cli;
mod admin_openapi;
mod observability;
mod policy_lifecycle;
mod policy_watch;
mod runtime_tenants;
mod upload_memory;

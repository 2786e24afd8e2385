//! The WASI a policy written in an interpreted language (Python,
//! JavaScript) gets: enough for its runtime to start, nothing to reach out.
//!
//! Invariants:
//! - Deny everything: no preopened directories, no sockets or name lookups,
//!   no environment variables, no arguments, stdin empty; stdout and stderr
//!   go to a bounded buffer the host reads only when the call fails
//!   (`guest_output`).
//! - No decision can depend on WASI: the wall clock is fixed at the Unix
//!   epoch, the monotonic clock stands still, sleeping returns at once and
//!   "random" bytes are a fixed sequence. The time of a call is in the
//!   request.
//! - Only the interfaces listed in [`PROVIDED`] may be imported; anything
//!   else is refused at load time with its name.
//! - The context is built the first time a policy calls into WASI, so
//!   policies that import none of it (Rust, `wasm32-unknown-unknown`) never
//!   pay for it.

use std::time::Duration;

use wasmtime::component::{Linker, Resource, ResourceTable};

use crate::engine::guest_output::GuestOutput;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView};

/// WASI interfaces a policy may import (any 0.2.x version). They are all
/// linked, and all of them are denied or made constant as described above.
pub const PROVIDED: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Whether `import` (e.g. `wasi:io/streams@0.2.3`) is a WASI interface the
/// host provides.
pub fn is_provided(import: &str) -> bool {
    let Some((name, version)) = import.split_once('@') else {
        return false;
    };
    version.starts_with("0.2.") && PROVIDED.contains(&name)
}

/// The version the host implements; `Linker` matches any 0.2.x import to it.
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// One instance's WASI state.
pub struct PolicyWasi {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl PolicyWasi {
    /// The deny-everything context, writing stdout and stderr to `output`.
    pub fn deny_all(output: &GuestOutput) -> Self {
        let mut builder = WasiCtxBuilder::new();
        // The builder starts with no preopens, no env, no args and an empty
        // stdin; sockets are switched off here.
        builder
            .stdout(output.clone())
            .stderr(output.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FixedWallClock)
            .monotonic_clock(StoppedClock)
            .secure_random(Deterministic::new(FIXED_BYTES.to_vec()))
            .insecure_random(Deterministic::new(FIXED_BYTES.to_vec()))
            .insecure_random_seed(0)
            .max_random_size(64 << 10);
        PolicyWasi {
            ctx: builder.build(),
            table: ResourceTable::new(),
        }
    }

    pub fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Not random at all, on purpose: a decision must not depend on it.
const FIXED_BYTES: [u8; 8] = [0x5a, 0x17, 0xc3, 0x88, 0x2e, 0xd1, 0x64, 0x9b];

struct FixedWallClock;

impl HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

struct StoppedClock;

impl HostMonotonicClock for StoppedClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        0
    }
}

/// A pollable that is always ready: with a stopped clock, every wait is over
/// at once. A waiting loop therefore spins and meets the epoch deadline
/// instead of blocking the host thread in a real sleep.
struct AlreadyReady;

#[wasmtime_wasi::async_trait]
impl Pollable for AlreadyReady {
    async fn ready(&mut self) {}
}

/// Adds the WASI interfaces to `linker`, with waits made instant.
pub fn add_to_linker<T: wasmtime_wasi::WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap("subscribe-duration", |mut cx, (_,): (u64,)| {
        Ok((ready_pollable(cx.data_mut().ctx().table)?,))
    })?;
    clock.func_wrap("subscribe-instant", |mut cx, (_,): (u64,)| {
        Ok((ready_pollable(cx.data_mut().ctx().table)?,))
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

fn ready_pollable(table: &mut ResourceTable) -> wasmtime::Result<Resource<DynPollable>> {
    let ready = table.push(AlreadyReady)?;
    subscribe(table, ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provided_interfaces_match_by_name_and_minor_version() {
        assert!(is_provided("wasi:io/streams@0.2.0"));
        assert!(is_provided("wasi:cli/environment@0.2.6"));
        assert!(!is_provided("wasi:http/outgoing-handler@0.2.0"));
        assert!(!is_provided("wasi:io/streams@0.3.0"));
        assert!(!is_provided("wasi:io/streams"));
        assert!(!is_provided("evil:exfil/net@0.2.0"));
    }
}

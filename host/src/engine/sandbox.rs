//! What a policy runs with: its per-call limits and the two host functions.
//!
//! Invariants:
//! - A policy gets the `tollgate:policy/host` interface (`log` and `price`)
//!   of the contract version it was built against
//!   and, for interpreted runtimes, the deny-everything WASI of
//!   [`crate::engine::wasi`]: no files, sockets, environment, real clocks or
//!   randomness.
//! - Memory growth past the tenant's cap traps at once (and is recorded, so
//!   the failure is reported as a memory limit, not a generic trap).
//! - Host functions bound what a policy can make the host do: log lines are
//!   cut and counted per decision.

use std::sync::Arc;

use wasmtime::component::{Linker, WasmStr};
use wasmtime::{ResourceLimiter, StoreContextMut};

use crate::contract::{ContractVersion, LogLevel, ModelPrice, v0_1};
use crate::engine::cpu_deadline::CallClock;
use crate::engine::guest_output::GuestOutput;
use crate::engine::wasi::PolicyWasi;
use crate::ids::MAX_MODEL_ID_BYTES;
use crate::pricing::PriceBook;

/// Longest log message kept from a policy, in bytes.
pub const MAX_LOG_BYTES: usize = 1024;
/// Log messages kept per decision; the rest are counted and dropped.
pub const MAX_LOGS_PER_CALL: u32 = 16;

/// Store data for one policy instance.
pub struct CallContext {
    /// "tenant@vN", for log lines.
    label: Arc<str>,
    prices: Arc<dyn PriceBook>,
    memory_cap: usize,
    /// Set when the policy tried to grow memory past `memory_cap`.
    pub(crate) memory_exceeded: bool,
    /// Ticks of the call's deadline left after its first slice (see
    /// `engine::long_call`); 0 once the epoch callback has granted them.
    pub(crate) ticks_after_slice: u64,
    /// When the current call started, for a deadline in CPU time.
    pub(crate) clock: CallClock,
    /// Linear memory the instance holds, all memories together.
    memory_bytes: usize,
    logs_left: u32,
    logs_dropped: u32,
    /// A rehearsal's: nothing it logs reaches the operator.
    pub(crate) muted: bool,
    /// Built on the first WASI call; Rust policies import no WASI and never
    /// pay for it.
    wasi: Option<Box<PolicyWasi>>,
    /// The guest's stdout and stderr during the current call.
    output: GuestOutput,
    /// The call's last error-level `log`, kept whatever the log rate
    /// limits dropped: a Rust policy's panic message arrives this way.
    last_error: Option<String>,
}

impl CallContext {
    pub(crate) fn new(label: Arc<str>, prices: Arc<dyn PriceBook>, memory_cap: usize) -> Self {
        CallContext {
            label,
            prices,
            memory_cap,
            memory_exceeded: false,
            ticks_after_slice: 0,
            clock: CallClock::default(),
            memory_bytes: 0,
            logs_left: MAX_LOGS_PER_CALL,
            logs_dropped: 0,
            muted: false,
            wasi: None,
            output: GuestOutput::default(),
            last_error: None,
        }
    }

    /// Resets the per-call budgets of a reused instance.
    pub(crate) fn begin_call(&mut self) {
        self.output.clear();
        self.last_error = None;
        self.memory_exceeded = false;
        self.logs_left = if self.muted { 0 } else { MAX_LOGS_PER_CALL };
        self.logs_dropped = 0;
    }

    /// What the guest wrote to stdout and stderr during this call (and its
    /// instantiation), escaped and bounded.
    pub(crate) fn guest_output(&self) -> Option<String> {
        self.output.text()
    }

    /// The call's last error-level log message, escaped and bounded.
    pub(crate) fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Linear memory this instance holds (its memories' sizes added up).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Reports log lines dropped during the call that just ended.
    pub(crate) fn end_call(&mut self) {
        if self.logs_dropped > 0
            && !self.muted
            && let Some(suppressed) = crate::log_gate::POLICY_LINES.admit(&self.label)
        {
            tracing::warn!(policy = %self.label, dropped = self.logs_dropped, suppressed, "policy log lines over the per-decision limit were dropped");
        }
    }

    fn log(&mut self, level: LogLevel, message: &str) {
        if matches!(level, LogLevel::Error) {
            let kept = &message[..message.floor_char_boundary(MAX_LOG_BYTES)];
            self.last_error = Some(crate::text::escape_controls(kept).into_owned());
        }
        if self.logs_left == 0 {
            self.logs_dropped += 1;
            return;
        }
        self.logs_left -= 1;
        // Across calls too: a policy logging on every call gets a few lines a second.
        let Some(suppressed) = crate::log_gate::POLICY_LINES.admit(&self.label) else {
            return;
        };
        // A policy's text cannot forge log lines: control characters are escaped.
        let message = crate::text::escape_controls(&message[..message.floor_char_boundary(MAX_LOG_BYTES)]);
        let policy = &*self.label;
        match level {
            LogLevel::Trace => tracing::trace!(target: "tollgate::policy", policy, suppressed, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "tollgate::policy", policy, suppressed, "{message}"),
            LogLevel::Info => tracing::info!(target: "tollgate::policy", policy, suppressed, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "tollgate::policy", policy, suppressed, "{message}"),
            LogLevel::Error => tracing::error!(target: "tollgate::policy", policy, suppressed, "{message}"),
        }
    }
}

impl wasmtime_wasi::WasiView for CallContext {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let output = &self.output;
        self.wasi
            .get_or_insert_with(|| Box::new(PolicyWasi::deny_all(output)))
            .view()
    }
}

impl ResourceLimiter for CallContext {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Called with `current == 0` when a memory is created, so the cap
        // bounds every memory of the instance together, not each alone.
        let total = self.memory_bytes.saturating_add(desired.saturating_sub(current));
        if total > self.memory_cap {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "policy memory limit of {} bytes exceeded (a memory growing from {current} to {desired} bytes would \
                 bring the instance's memories to {total} bytes)",
                self.memory_cap
            );
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a policy needs few.
        const MAX_TABLE_ELEMENTS: usize = 100_000;
        if desired > MAX_TABLE_ELEMENTS {
            self.memory_exceeded = true;
            wasmtime::bail!("policy table limit of {MAX_TABLE_ELEMENTS} elements exceeded");
        }
        Ok(true)
    }
}

/// The linker every policy is instantiated with: the host interface and the
/// type-only interface of every contract version, and the deny-everything
/// WASI. A component is linked only to what it imports, so a policy without
/// WASI imports gets none.
pub(crate) fn policy_linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<CallContext>> {
    let mut linker = Linker::<CallContext>::new(engine);
    crate::engine::wasi::add_to_linker(&mut linker)?;
    for version in ContractVersion::SUPPORTED {
        linker.instance(version.types_interface())?;
        let mut host = linker.instance(version.host_interface())?;
        // Strings are borrowed from the guest's memory, not lifted into host
        // memory: only a bounded prefix is ever copied, whatever the guest passes.
        host.func_wrap("log", |mut cx, (level, message): (LogLevel, WasmStr)| {
            let prefix = {
                let text = message.to_str(&cx)?;
                text[..text.floor_char_boundary(MAX_LOG_BYTES)].to_owned()
            };
            cx.data_mut().log(level, &prefix);
            Ok(())
        })?;
        match version {
            ContractVersion::V0_1 => host.func_wrap("price", |cx, (model,): (WasmStr,)| {
                let price: Option<v0_1::ModelPrice> = lookup(&cx, &model)?.map(Into::into);
                Ok((price,))
            })?,
            ContractVersion::V0_2 => host.func_wrap("price", |cx, (model,): (WasmStr,)| Ok((lookup(&cx, &model)?,)))?,
        }
    }
    Ok(linker)
}

fn lookup(cx: &StoreContextMut<'_, CallContext>, model: &WasmStr) -> wasmtime::Result<Option<ModelPrice>> {
    let model = model.to_str(cx)?;
    // No model id is this long; a longer one is unpriced, unread.
    Ok(if model.len() <= MAX_MODEL_ID_BYTES {
        cx.data().prices.price(&model)
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_cap_bounds_all_memories_together() {
        let prices: Arc<dyn PriceBook> = Arc::new(crate::pricing::StaticPrices::default());
        let mut cx = CallContext::new("t@v1".into(), prices, 64 << 20);
        assert!(cx.memory_growing(0, 40 << 20, None).is_ok(), "one memory under the cap");
        let second = cx.memory_growing(0, 40 << 20, None);
        assert!(second.is_err(), "a second memory past the cap in total must be refused");
        assert!(cx.memory_exceeded);
        assert_eq!(cx.memory_bytes(), 40 << 20, "the refused growth is not counted");
        assert!(
            cx.memory_growing(40 << 20, 64 << 20, None).is_ok(),
            "up to the cap exactly"
        );
    }
}

//! Write tollgate cost policies in Rust.
//!
//! A policy is a type that implements [`Policy`], exported with
//! [`export_policy!`]. The host calls [`Policy::decide`] for every Bedrock
//! call of the tenant and enforces the [`Verdict`]:
//!
//! ```ignore
//! use tollgate_policy::*;
//!
//! struct Cap;
//!
//! impl Policy for Cap {
//!     fn decide(request: &Request, state: &TenantState) -> Verdict {
//!         if state.budget.spent + request.worst_case_cost > state.budget.limit {
//!             return Verdict::reject(RejectKind::BudgetExhausted, "over budget");
//!         }
//!         Verdict::admit("within budget")
//!     }
//! }
//!
//! export_policy!(Cap);
//! ```
//!
//! Build with `tollgate policy build DIR`: it compiles for
//! `wasm32-unknown-unknown` and wraps the module as a component. Money is
//! integer nano-dollars throughout; see [`money`]. Per-tenant parameters
//! arrive as JSON; see [`config`]. The tenant's local time is
//! `state.clock` ([`clock`]); the requested model and the operator's
//! downgrade chain come priced for the call ([`models`]).

pub mod clock;
pub mod config;
pub mod host;
pub mod models;
pub mod money;
pub mod verdict;

/// The generated bindings of the `tollgate:policy/policy` world. A macro
/// exported from a library must live outside the crate root, hence the module.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "tollgate_policy::bindings",
        export_macro_name: "export_bindings",
    });
}

pub use bindings::Guest as __Guest;
pub use bindings::tollgate::policy::host::LogLevel;
pub use bindings::tollgate::policy::types::{
    Action, AlertLevel, Budget, CacheLocation, CachePoint, CacheTtl, Indicators, LatencyMode, LocalTime, ModelOption,
    ModelPrice, NanoUsd, Operation, Period, Plan, RateWindow, RejectKind, Request, ServiceTier, TenantState, Verdict,
    Weekday,
};

pub use config::{no_parameters, parse_config};
pub use models::cheapest_downgrade;
pub use money::{NANOS_PER_USD, cents, cost_of, format_usd, percent_of, usd};

/// A tenant cost policy.
pub trait Policy {
    /// Decide one call. Must be pure: the same inputs give the same verdict.
    fn decide(request: &Request, state: &TenantState) -> Verdict;

    /// Check the tenant's parameters once at load time; an `Err` says what is
    /// wrong and keeps the policy from being activated.
    fn validate_config(config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }
}

/// Exports a [`Policy`] implementation as the component's `decide` and
/// `validate-config`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            struct __TollgateExport;

            impl $crate::__Guest for __TollgateExport {
                fn decide(request: $crate::Request, state: $crate::TenantState) -> $crate::Verdict {
                    $crate::__report_panics();
                    <$policy as $crate::Policy>::decide(&request, &state)
                }

                fn validate_config(config: ::std::string::String) -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__report_panics();
                    <$policy as $crate::Policy>::validate_config(&config)
                }
            }

    $crate::bindings::export_bindings!(__TollgateExport with_types_in $crate::bindings);
        };
    };
}

/// Sends a panic's message and place to the host log (at error level) before
/// the call traps, so the operator reads it beside the failure instead of
/// "wasm `unreachable` instruction executed". Installed once per instance.
#[doc(hidden)]
pub fn __report_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            host::log(LogLevel::Error, &format!("panicked{place}: {message}"));
        }));
    });
}

/// Milliseconds from `now_ms` to the start of the next one-minute window:
/// the natural retry delay when a per-minute limit is full.
pub fn ms_until_next_minute(now_ms: u64) -> u64 {
    60_000 - now_ms % 60_000
}

impl Budget {
    /// Spent plus reserved: what the tenant has committed so far.
    pub fn committed(&self) -> NanoUsd {
        self.spent.saturating_add(self.reserved)
    }

    /// What is left of the limit after committed spend (0 when over).
    pub fn remaining(&self) -> NanoUsd {
        self.limit.saturating_sub(self.committed())
    }
}

impl AlertLevel {
    /// Orders levels green < yellow < orange < red.
    pub fn rank(self) -> u8 {
        match self {
            AlertLevel::Green => 0,
            AlertLevel::Yellow => 1,
            AlertLevel::Orange => 2,
            AlertLevel::Red => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AlertLevel::Green => "green",
            AlertLevel::Yellow => "yellow",
            AlertLevel::Orange => "orange",
            AlertLevel::Red => "red",
        }
    }

    /// Parses "green" | "yellow" | "orange" | "red".
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "green" => Some(AlertLevel::Green),
            "yellow" => Some(AlertLevel::Yellow),
            "orange" => Some(AlertLevel::Orange),
            "red" => Some(AlertLevel::Red),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_minute() {
        assert_eq!(ms_until_next_minute(120_000), 60_000);
        assert_eq!(ms_until_next_minute(120_001), 59_999);
        assert_eq!(ms_until_next_minute(179_999), 1);
    }

    #[test]
    fn alert_order_and_names() {
        let all = [
            AlertLevel::Green,
            AlertLevel::Yellow,
            AlertLevel::Orange,
            AlertLevel::Red,
        ];
        for pair in all.windows(2) {
            assert!(pair[0].rank() < pair[1].rank());
        }
        for level in all {
            assert_eq!(
                AlertLevel::parse(level.name()).map(AlertLevel::rank),
                Some(level.rank())
            );
        }
        assert!(AlertLevel::parse("purple").is_none());
    }

    #[test]
    fn committed_and_remaining_saturate() {
        let budget = Budget {
            limit: 100,
            spent: 70,
            reserved: 50,
            period: Period::Monthly,
            period_start_ms: 0,
            period_end_ms: 1,
            days_elapsed: 0,
            days_remaining: 31,
        };
        assert_eq!(budget.committed(), 120);
        assert_eq!(budget.remaining(), 0);
    }
}

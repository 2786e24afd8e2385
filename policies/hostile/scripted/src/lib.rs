//! Returns the verdict its config describes, unchecked, so the host's own
//! checks of policy output can be tried with any value a policy could send.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Deserialize;
use tollgate_policy::*;

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
struct Script {
    /// admit, downgrade, throttle or reject.
    action: String,
    /// The downgrade target.
    target: String,
    reason: String,
    metadata: Vec<(String, String)>,
    retry_after_ms: u64,
    max_output_tokens: Option<u64>,
    /// Rounds of busy work before answering, to use a chosen amount of CPU.
    burn: u64,
    /// Rounds of busy work on its instance's first decision only, as an
    /// interpreter's first run costs (its heap's pages copied on first write).
    first_burn: u64,
    /// From this decision of its instance on (1 is its first; 0 never),
    /// spin until stopped, and number each decision before in its reason:
    /// a policy that times out on a later call of an instance only.
    spin_from_decision: u64,
}

/// Per instance: each has its own linear memory.
static DECIDED: AtomicBool = AtomicBool::new(false);
static DECISIONS: AtomicU64 = AtomicU64::new(0);

struct Scripted;

impl Policy for Scripted {
    fn validate_config(config: &str) -> Result<(), String> {
        parse_config::<Script>(config).map(drop)
    }

    fn decide(request: &Request, _state: &TenantState) -> Verdict {
        let Ok(script) = parse_config::<Script>(&request.config) else {
            return Verdict::reject(RejectKind::Denied, "scripted: invalid config");
        };
        // Depends on the input, so the optimiser can neither fold nor drop it.
        let mut x = request.now_ms | 1;
        let first = !DECIDED.swap(true, Ordering::Relaxed);
        let decision = DECISIONS.fetch_add(1, Ordering::Relaxed) + 1;
        if script.spin_from_decision != 0 && decision >= script.spin_from_decision {
            while x != 0 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(2);
            }
        }
        let rounds = script.burn + if first { script.first_burn } else { 0 };
        for _ in 0..rounds {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        let mut verdict = match script.action.as_str() {
            "downgrade" => Verdict::downgrade(script.target, script.reason),
            "throttle" => Verdict::throttle(script.retry_after_ms, script.reason),
            "reject" => Verdict::reject(RejectKind::Denied, script.reason),
            _ => Verdict::admit(script.reason),
        };
        if script.spin_from_decision != 0 {
            verdict.reason = format!("{} (decision {decision} of its instance)", verdict.reason);
        }
        verdict.metadata = script.metadata;
        verdict.max_output_tokens = script.max_output_tokens;
        if x == 0 {
            verdict.reason.push_str(" (burnt to zero)");
        }
        verdict
    }
}

export_policy!(Scripted);

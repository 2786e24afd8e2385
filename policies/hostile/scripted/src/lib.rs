//! Returns the verdict its config describes, unchecked, so the host's own
//! checks of policy output can be tried with any value a policy could send.

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
}

struct Scripted;

impl Policy for Scripted {
    fn validate_config(config: &str) -> Result<(), String> {
        parse_config::<Script>(config).map(drop)
    }

    fn decide(request: &Request, _state: &TenantState) -> Verdict {
        let Ok(script) = parse_config::<Script>(&request.config) else {
            return Verdict::reject(RejectKind::Denied, "scripted: invalid config");
        };
        let mut verdict = match script.action.as_str() {
            "downgrade" => Verdict::downgrade(script.target, script.reason),
            "throttle" => Verdict::throttle(script.retry_after_ms, script.reason),
            "reject" => Verdict::reject(RejectKind::Denied, script.reason),
            _ => Verdict::admit(script.reason),
        };
        verdict.metadata = script.metadata;
        verdict.max_output_tokens = script.max_output_tokens;
        verdict
    }
}

export_policy!(Scripted);

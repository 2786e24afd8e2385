//! tiered: behaviour by the tenant's plan tier, with included token quotas.
//!
//! - free: only the configured free model, output capped, and no tokens
//!   beyond the plan's included quota (rejected as quota-exceeded).
//! - pro: any model within the money budget; past the included tokens the
//!   call is admitted as overage, and close to the budget it is downgraded.
//! - enterprise: never cut off by money alone; spend over the budget is
//!   admitted and flagged so the account team can act. Rate limits still hold.
//! - any other tier is rejected, naming the tier, so a misconfigured tenant
//!   is found at its first call.

use serde::Deserialize;
use tollgate_policy::*;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
struct Config {
    free_model: String,
    free_max_output_tokens: u64,
    pro_downgrade_at_percent: u64,
    pro_downgrade_to: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            free_model: "amazon.nova-micro-v1:0".into(),
            free_max_output_tokens: 1024,
            pro_downgrade_at_percent: 90,
            pro_downgrade_to: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        }
    }
}

impl Config {
    fn load(text: &str) -> Result<Self, String> {
        let config: Config = parse_config(text)?;
        if config.free_model.is_empty() || config.pro_downgrade_to.is_empty() {
            return Err("free-model and pro-downgrade-to must name a model".into());
        }
        if config.free_max_output_tokens == 0 {
            return Err("free-max-output-tokens must be at least 1".into());
        }
        if config.pro_downgrade_at_percent > 100 {
            return Err(format!(
                "pro-downgrade-at-percent is {}; it must be at most 100",
                config.pro_downgrade_at_percent
            ));
        }
        Ok(config)
    }
}

struct Tiered;

impl Policy for Tiered {
    fn validate_config(config: &str) -> Result<(), String> {
        Config::load(config).map(drop)
    }

    fn decide(request: &Request, state: &TenantState) -> Verdict {
        let Ok(config) = Config::load(&request.config) else {
            return Verdict::reject(RejectKind::Denied, "tiered: invalid config");
        };
        if let Some(rpm) = state.window.rpm_limit
            && state.window.requests >= rpm
        {
            return Verdict::throttle(
                ms_until_next_minute(request.now_ms),
                format!("requests-per-minute limit {rpm} reached"),
            );
        }
        match state.plan.tier.as_str() {
            "free" => free(request, state, &config),
            "pro" => pro(request, state, &config),
            "enterprise" => enterprise(state),
            other => Verdict::reject(
                RejectKind::Denied,
                format!("unknown tier {other:?}: configure the tenant as free, pro or enterprise"),
            ),
        }
        .with_metadata("tier", state.plan.tier.clone())
    }
}

fn call_tokens(request: &Request) -> u64 {
    request.estimated_input_tokens.saturating_add(request.max_output_tokens)
}

fn free(request: &Request, state: &TenantState, config: &Config) -> Verdict {
    let plan = &state.plan;
    let output = request.max_output_tokens.min(config.free_max_output_tokens);
    let needed = request.estimated_input_tokens.saturating_add(output);
    if plan.used_tokens.saturating_add(needed) > plan.included_tokens {
        return Verdict::reject(
            RejectKind::QuotaExceeded,
            format!(
                "free tier quota: {} of {} included tokens used; this call needs up to {needed}; upgrade to pro for more",
                plan.used_tokens, plan.included_tokens
            ),
        );
    }
    let verdict = if request.base_model_id == config.free_model {
        Verdict::admit(format!("free tier on {}", config.free_model))
    } else {
        Verdict::downgrade(
            config.free_model.clone(),
            format!(
                "free tier uses {} instead of {}",
                config.free_model, request.base_model_id
            ),
        )
    };
    if request.max_output_tokens > config.free_max_output_tokens {
        verdict.cap_output_tokens(config.free_max_output_tokens)
    } else {
        verdict
    }
}

fn pro(request: &Request, state: &TenantState, config: &Config) -> Verdict {
    let budget = &state.budget;
    let committed = budget.committed();
    if committed.saturating_add(request.worst_case_cost) > budget.limit {
        return Verdict::reject(
            RejectKind::BudgetExhausted,
            format!(
                "pro budget: {} of {} committed and this call may cost {}",
                format_usd(committed),
                format_usd(budget.limit),
                format_usd(request.worst_case_cost)
            ),
        );
    }
    let overage = state.plan.used_tokens.saturating_add(call_tokens(request)) > state.plan.included_tokens;
    let percent = percent_of(committed.saturating_add(request.worst_case_cost), budget.limit);
    let verdict = if percent >= config.pro_downgrade_at_percent && request.base_model_id != config.pro_downgrade_to {
        Verdict::downgrade(
            config.pro_downgrade_to.clone(),
            format!(
                "pro tier at {percent}% of the budget: downgraded to {}",
                config.pro_downgrade_to
            ),
        )
    } else {
        Verdict::admit(format!("pro tier at {percent}% of the budget"))
    };
    if overage {
        verdict.with_metadata("overage", "true")
    } else {
        verdict
    }
}

fn enterprise(state: &TenantState) -> Verdict {
    let budget = &state.budget;
    let percent = percent_of(budget.committed(), budget.limit);
    if percent >= 100 {
        host::warn(&format!("enterprise tenant over budget: {percent}%"));
        return Verdict::admit(format!(
            "enterprise tier over budget ({percent}% of {}): admitted and flagged",
            format_usd(budget.limit)
        ))
        .with_metadata("over-budget", "true");
    }
    Verdict::admit(format!("enterprise tier at {percent}% of the budget"))
}

export_policy!(Tiered);

//! budget-guard: keep a tenant inside its money budget.
//!
//! - Rejects once committed spend (spent + reserved) reaches
//!   `reject-at-percent` of the budget.
//! - Throttles until the next minute when the call's tokens would pass the
//!   tenant's tokens-per-minute limit.
//! - From `downgrade-at-percent` (counting this call's worst case), or when
//!   the alert level reaches `downgrade-on-alert`, moves the call one step
//!   down `downgrade-chain` to the next model that is actually cheaper.

use serde::Deserialize;
use tollgate_policy::*;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
struct Config {
    downgrade_at_percent: u64,
    reject_at_percent: u64,
    downgrade_on_alert: String,
    downgrade_chain: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            downgrade_at_percent: 80,
            reject_at_percent: 100,
            downgrade_on_alert: "orange".into(),
            downgrade_chain: vec![
                "anthropic.claude-sonnet-4-20250514-v1:0".into(),
                "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
                "amazon.nova-micro-v1:0".into(),
            ],
        }
    }
}

impl Config {
    fn load(text: &str) -> Result<Self, String> {
        let config: Config = parse_config(text)?;
        if config.reject_at_percent == 0 || config.reject_at_percent > 100 {
            return Err(format!(
                "reject-at-percent is {}; it must be between 1 and 100",
                config.reject_at_percent
            ));
        }
        if config.downgrade_at_percent > config.reject_at_percent {
            return Err(format!(
                "downgrade-at-percent is {}; it must be at most reject-at-percent ({})",
                config.downgrade_at_percent, config.reject_at_percent
            ));
        }
        if AlertLevel::parse(&config.downgrade_on_alert).is_none() {
            return Err(format!(
                "downgrade-on-alert is {:?}; use green, yellow, orange or red",
                config.downgrade_on_alert
            ));
        }
        if config.downgrade_chain.iter().any(|m| m.is_empty()) {
            return Err("downgrade-chain has an empty model id".into());
        }
        Ok(config)
    }
}

struct BudgetGuard;

impl Policy for BudgetGuard {
    fn validate_config(config: &str) -> Result<(), String> {
        Config::load(config).map(drop)
    }

    fn decide(request: &Request, state: &TenantState) -> Verdict {
        // validate-config accepted this config at load time.
        let Ok(config) = Config::load(&request.config) else {
            return Verdict::reject(RejectKind::Denied, "budget-guard: invalid config");
        };
        let budget = &state.budget;
        let committed = budget.committed();
        let used = percent_of(committed, budget.limit);
        if used >= config.reject_at_percent {
            return Verdict::reject(
                RejectKind::BudgetExhausted,
                format!(
                    "budget exhausted: {} of {} committed this period ({used}%)",
                    format_usd(committed),
                    format_usd(budget.limit)
                ),
            )
            .with_metadata("budget-percent", used.to_string());
        }

        let window = &state.window;
        let call_tokens = request.estimated_input_tokens.saturating_add(request.max_output_tokens);
        if let Some(tpm) = window.tpm_limit
            && window.tokens.saturating_add(call_tokens) > tpm
        {
            return Verdict::throttle(
                ms_until_next_minute(request.now_ms),
                format!(
                    "tokens-per-minute limit {tpm}: {} used this minute and this call needs up to {call_tokens}",
                    window.tokens
                ),
            );
        }

        let with_call = percent_of(committed.saturating_add(request.worst_case_cost), budget.limit);
        let alert_trigger = AlertLevel::parse(&config.downgrade_on_alert).unwrap_or(AlertLevel::Red);
        let by_spend = with_call >= config.downgrade_at_percent;
        let by_alert = state.alert.rank() >= alert_trigger.rank();
        if by_spend || by_alert {
            let why = if by_spend {
                format!(
                    "{with_call}% of the budget with this call (threshold {}%)",
                    config.downgrade_at_percent
                )
            } else {
                format!("alert level {}", state.alert.name())
            };
            if let Some(model) = cheaper_model(&config.downgrade_chain, &request.base_model_id) {
                return Verdict::downgrade(
                    model.clone(),
                    format!("{why}: downgraded from {} to {model}", request.base_model_id),
                )
                .with_metadata("budget-percent", used.to_string());
            }
            return Verdict::admit(format!("{why}, but no cheaper model in the chain"))
                .with_metadata("budget-percent", used.to_string());
        }
        Verdict::admit(format!("{used}% of the {} budget used", format_usd(budget.limit)))
            .with_metadata("budget-percent", used.to_string())
    }
}

/// The next model after `current` in `chain` (or the chain's first, when
/// `current` is not in it) whose list price is below `current`'s.
fn cheaper_model<'a>(chain: &'a [String], current: &str) -> Option<&'a String> {
    let start = chain.iter().position(|m| m == current).map_or(0, |i| i + 1);
    let current_price = host::price(current).map(|p| cost_of(&p, 1_000_000, 1_000_000));
    chain[start..].iter().find(|candidate| {
        match (current_price, host::price(candidate)) {
            (Some(current), Some(p)) => cost_of(&p, 1_000_000, 1_000_000) < current,
            // Unpriced current model: any priced model in the chain is a known cost.
            (None, Some(_)) => true,
            (_, None) => false,
        }
    })
}

export_policy!(BudgetGuard);

//! forecast-guard: act on where spend is heading, not where it has been.
//!
//! Downgrades to a cheaper model when the forecast spend at period end passes
//! `margin-percent` of the budget, even while today's spend is well inside
//! it; rejects only once the budget is actually committed.

use serde::Deserialize;
use tollgate_policy::*;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
struct Config {
    downgrade_to: String,
    margin_percent: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            downgrade_to: "amazon.nova-lite-v1:0".into(),
            margin_percent: 100,
        }
    }
}

impl Config {
    fn load(text: &str) -> Result<Self, String> {
        let config: Config = parse_config(text)?;
        if config.downgrade_to.is_empty() {
            return Err("downgrade-to must name a model".into());
        }
        if !(1..=1000).contains(&config.margin_percent) {
            return Err(format!(
                "margin-percent is {}; it must be between 1 and 1000",
                config.margin_percent
            ));
        }
        Ok(config)
    }
}

struct ForecastGuard;

impl Policy for ForecastGuard {
    fn validate_config(config: &str) -> Result<(), String> {
        Config::load(config).map(drop)
    }

    fn decide(request: &Request, state: &TenantState) -> Verdict {
        let Ok(config) = Config::load(&request.config) else {
            return Verdict::reject(RejectKind::Denied, "forecast-guard: invalid config");
        };
        let budget = &state.budget;
        let committed = budget.committed();
        if committed >= budget.limit {
            return Verdict::reject(
                RejectKind::BudgetExhausted,
                format!(
                    "budget exhausted: {} of {} committed",
                    format_usd(committed),
                    format_usd(budget.limit)
                ),
            );
        }
        let forecast = state.indicators.forecast_spend;
        let forecast_percent = percent_of(forecast, budget.limit);
        let tripped = u128::from(forecast) * 100 > u128::from(budget.limit) * u128::from(config.margin_percent);
        if !tripped {
            return Verdict::admit(format!(
                "forecast {} is {forecast_percent}% of the {} budget",
                format_usd(forecast),
                format_usd(budget.limit)
            ))
            .with_metadata("forecast-percent", forecast_percent.to_string());
        }
        let why = format!(
            "forecast {} at period end is {forecast_percent}% of the {} budget (spent {})",
            format_usd(forecast),
            format_usd(budget.limit),
            format_usd(budget.spent)
        );
        if is_cheaper(&config.downgrade_to, &request.base_model_id) {
            Verdict::downgrade(
                config.downgrade_to.clone(),
                format!("{why}: downgraded to {}", config.downgrade_to),
            )
        } else {
            Verdict::admit(format!(
                "{why}; {} is already no dearer than {}",
                request.base_model_id, config.downgrade_to
            ))
        }
        .with_metadata("forecast-percent", forecast_percent.to_string())
    }
}

/// Whether `target` costs less than `current` per million input + output
/// tokens. An unpriced current model counts as dearer.
fn is_cheaper(target: &str, current: &str) -> bool {
    if target == current {
        return false;
    }
    let cost = |model: &str| host::price(model).map(|p| cost_of(&p, 1_000_000, 1_000_000));
    match (cost(target), cost(current)) {
        (Some(t), Some(c)) => t < c,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

export_policy!(ForecastGuard);

//! The budget brain end to end: the catalog prices a call, the estimator
//! sizes it, the ledger holds and charges it, the alerts watch the spend,
//! and a real policy component decides on the state they build together.

mod support;

use std::sync::Arc;

use serde_json::json;
use support::*;
use tollgate_host::accounting::Accounting;
use tollgate_host::alerts::{AlertSettings, Alerts};
use tollgate_host::ledger::{Actual, Ledger, LedgerSettings, MemoryStore, ReserveError, ReserveRequest, TenantLimits};
use tollgate_host::{Action, Catalog, Estimator, NanoUsd, PolicySettings, Registry, RejectKind, Request, Usage};

const SONNET: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// 2026-01-15T00:00:00Z.
const NOW: u64 = 1_768_435_200_000;

struct Tenant {
    accounting: Accounting<MemoryStore>,
    catalog: Catalog,
    estimator: Estimator,
    registry: Registry,
}

impl Tenant {
    fn new(budget: NanoUsd) -> Self {
        let ledger = Ledger::new(MemoryStore::new(), LedgerSettings::default());
        let mut limits = TenantLimits::monthly(budget);
        limits.tpm = Some(100_000);
        ledger.set_limits(&tenant("acme"), limits);
        let alerts = Arc::new(Alerts::new(AlertSettings::default()).expect("alerts"));
        let registry = Registry::new(engine());
        register(&registry, "acme", "budget-guard", PolicySettings::default());
        Tenant {
            accounting: Accounting::new(ledger, alerts),
            catalog: Catalog::embedded(),
            estimator: Estimator::new(),
            registry,
        }
    }

    /// One call through every step but the upstream: estimate, state,
    /// decide, reserve and settle with `usage` as the model's reply.
    fn call(&self, body: &serde_json::Value, usage: Usage, now_ms: u64) -> (Action, Result<NanoUsd, ReserveError>) {
        let acme = tenant("acme");
        let estimate = self.estimator.estimate(SONNET, body);
        let max_output = self.estimator.max_output_tokens(SONNET, body);
        let worst = self
            .catalog
            .worst_case(SONNET, estimate.input_tokens, max_output)
            .expect("priced");
        let state = self.accounting.tenant_state(&acme, "pro", now_ms).expect("state");
        let mut request = Request {
            model_id: SONNET.into(),
            base_model_id: "anthropic.claude-sonnet-4-20250514-v1:0".into(),
            estimated_input_tokens: estimate.input_tokens,
            max_output_tokens: max_output,
            worst_case_cost: worst.get(),
            now_ms,
            ..Request::default()
        };
        let decision = self.registry.decide(&acme, &mut request, &state).expect("decide");
        let model = match &decision.action {
            Action::Downgrade(model) => model.clone(),
            Action::Admit => SONNET.to_owned(),
            _ => return (decision.action, Ok(NanoUsd::ZERO)),
        };
        let held = self
            .catalog
            .worst_case(&model, estimate.input_tokens, max_output)
            .expect("priced");
        let reservation = match self.accounting.reserve(
            &acme,
            ReserveRequest {
                cost: held,
                tokens: estimate.input_tokens + max_output,
                now_ms,
                ceiling: None,
            },
        ) {
            Ok(r) => r,
            Err(e) => return (decision.action, Err(e)),
        };
        let cost = self.catalog.cost(&model, &usage).expect("priced");
        let actual = Actual {
            cost,
            tokens: usage.input_tokens + usage.output_tokens,
        };
        self.accounting
            .settle(&acme, reservation.id, actual, now_ms)
            .expect("settle");
        self.estimator.observe(&model, estimate.raw, usage.prompt_tokens());
        (decision.action, Ok(cost))
    }
}

fn body() -> serde_json::Value {
    json!({
        "system": [{"text": "You are a helpful assistant for an accounting product."}],
        "messages": [{"role": "user", "content": [{"text": "Summarise this quarter's invoices in three bullet points. ".repeat(20)}]}],
        "inferenceConfig": {"maxTokens": 1000}
    })
}

fn usage() -> Usage {
    Usage {
        input_tokens: 300,
        output_tokens: 600,
        ..Usage::default()
    }
}

#[test]
fn spend_moves_the_state_and_the_policy_follows() {
    // A $0.10 budget: each Sonnet call costs $0.0099 (300 in at $3/M, 600 out at $15/M).
    let t = Tenant::new(NanoUsd(100_000_000));
    let acme = tenant("acme");

    let (action, cost) = t.call(&body(), usage(), NOW);
    assert_eq!(action, Action::Admit);
    assert_eq!(cost.expect("charged"), NanoUsd(9_900_000));
    let state = t.accounting.tenant_state(&acme, "pro", NOW).expect("state");
    assert_eq!(state.budget.spent, 9_900_000);
    assert_eq!(state.budget.reserved, 0, "the hold was replaced by the charge");
    assert_eq!(state.plan.used_tokens, 900);
    assert_eq!(state.window.tpm_limit, Some(100_000));
    assert_eq!(state.budget.period_start_ms, 1_767_225_600_000, "January 2026 in UTC");

    // Spend until the policy downgrades, then until nothing more fits.
    let mut actions = Vec::new();
    for i in 1..40 {
        let (action, result) = t.call(&body(), usage(), NOW + i * 1000);
        let refused = matches!(action, Action::Reject(_)) || result.is_err();
        actions.push(action);
        if refused {
            break;
        }
    }
    assert!(
        actions.iter().any(|a| matches!(a, Action::Downgrade(_))),
        "budget-guard downgrades before the budget runs out: {actions:?}"
    );
    let state = t.accounting.tenant_state(&acme, "pro", NOW + 60_000).expect("state");
    assert!(
        state.budget.spent <= state.budget.limit,
        "admission never overshoots: {} of {}",
        state.budget.spent,
        state.budget.limit
    );
    let last = actions.last().expect("some calls");
    assert!(
        matches!(last, Action::Reject(RejectKind::BudgetExhausted)) || matches!(last, Action::Downgrade(_)),
        "{last:?}"
    );
    assert_ne!(
        state.alert,
        tollgate_host::AlertLevel::Green,
        "spend near the limit raises the alert"
    );
}

#[test]
fn the_ledger_refuses_what_the_budget_cannot_hold() {
    let t = Tenant::new(NanoUsd(10_000_000));
    let acme = tenant("acme");
    let err = t
        .accounting
        .reserve(
            &acme,
            ReserveRequest {
                cost: NanoUsd(10_000_001),
                tokens: 10,
                now_ms: NOW,
                ceiling: None,
            },
        )
        .expect_err("one nano-dollar over the limit");
    let text = err.to_string();
    assert!(text.contains("budget"), "{text}");
}

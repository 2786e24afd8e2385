//! `tollgate policy demo`: build the example policies from source, give three
//! tenants different policies and tiers, and walk their budgets from 10% to
//! past 100% in process (no gateway), showing each decision as it is made.
//! Then show a hostile policy contained, a hot swap and a rollback.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use tollgate_host::registry::cases::describe;
use tollgate_host::{
    AlertLevel, Decision, NanoUsd, PolicyEngine, PolicySettings, Registry, Request, TenantId, TenantState,
};

use crate::policy_build;

struct DemoTenant {
    id: &'static str,
    policy: &'static str,
    tier: &'static str,
    config: &'static str,
}

const TENANTS: [DemoTenant; 3] = [
    DemoTenant {
        id: "acme",
        policy: "budget_guard",
        tier: "pro",
        config: r#"{"downgrade-at-percent": 80}"#,
    },
    DemoTenant {
        id: "globex",
        policy: "tiered",
        tier: "free",
        config: "",
    },
    DemoTenant {
        id: "initech",
        policy: "forecast_guard",
        tier: "enterprise",
        config: r#"{"downgrade-to": "amazon.nova-lite-v1:0"}"#,
    },
];

const LIMIT: NanoUsd = NanoUsd::from_usd(100);

pub fn run(policies: Option<PathBuf>) -> Result<()> {
    println!("tollgate demo: per-tenant WebAssembly cost policies\n");
    let components = policy_build::build_examples(policies)?;
    println!();

    let cache = std::env::temp_dir().join("tollgate-demo-cache");
    let engine = PolicyEngine::builder().cache_dir(&cache).max_instances(64).build()?;
    let registry = Registry::new(engine);
    println!("{:<9} {:<16} {:<11} config", "tenant", "policy", "tier");
    for t in &TENANTS {
        let wasm = std::fs::read(components.join(format!("{}.wasm", t.policy)))?;
        let settings = PolicySettings {
            config: t.config.into(),
            ..PolicySettings::default()
        };
        let id = registry.register(&TenantId::new(t.id)?, &wasm, settings, t.policy, None)?;
        let config = if t.config.is_empty() { "(defaults)" } else { t.config };
        println!("{:<9} {:<16} {:<11} {config}  → {id}", t.id, t.policy, t.tier);
    }

    println!("\nEach tenant has a {LIMIT} monthly budget. Spend climbs; every row is one real policy call.\n");
    println!(
        "{:>6}  {:<6}  {:<50} {:<50} {:<50}",
        "spent", "alert", "acme (budget-guard)", "globex (tiered, free)", "initech (forecast-guard)"
    );
    let steps: [(u64, AlertLevel); 8] = [
        (10, AlertLevel::Green),
        (40, AlertLevel::Green),
        (70, AlertLevel::Yellow),
        (79, AlertLevel::Yellow),
        (85, AlertLevel::Orange),
        (95, AlertLevel::Orange),
        (99, AlertLevel::Red),
        (100, AlertLevel::Red),
    ];
    for (percent, alert) in steps {
        let mut cells = Vec::new();
        for t in &TENANTS {
            let state = demo_state(t.tier, percent, alert);
            let decision = decide(&registry, t.id, &state)?;
            cells.push(format!("{} ({:.1?})", describe(&decision.action), decision.elapsed));
        }
        println!(
            "{percent:>5}%  {:<6}  {:<50} {:<50} {:<50}",
            alert_name(alert),
            cells[0],
            cells[1],
            cells[2]
        );
    }

    println!("\nacme's minute window is nearly full (tokens-per-minute limit 10,000):");
    let mut state = demo_state("pro", 30, AlertLevel::Green);
    state.window.tokens = 9_000;
    state.window.tpm_limit = Some(10_000);
    show(&decide(&registry, "acme", &state)?);

    println!("\na hostile policy: tenant `mallory` uploads one that loops forever (deadline 5 ms, fail-closed):");
    let spin = std::fs::read(components.join("spin.wasm")).context("the hostile `spin` policy was not built")?;
    registry.register(
        &TenantId::new("mallory")?,
        &spin,
        PolicySettings::default(),
        "spin",
        None,
    )?;
    show(&decide(
        &registry,
        "mallory",
        &demo_state("pro", 10, AlertLevel::Green),
    )?);
    println!("  …and acme, decided right after, is unaffected:");
    show(&decide(&registry, "acme", &demo_state("pro", 10, AlertLevel::Green))?);

    println!("\nhot swap: acme gets allow-all, then rolls back:");
    let allow_all = std::fs::read(components.join("allow_all.wasm"))?;
    let acme = TenantId::new("acme")?;
    registry.register(&acme, &allow_all, PolicySettings::default(), "allow_all", None)?;
    show(&decide(&registry, "acme", &demo_state("pro", 99, AlertLevel::Red))?);
    registry.rollback(&acme)?;
    show(&decide(&registry, "acme", &demo_state("pro", 99, AlertLevel::Red))?);

    let state = demo_state("pro", 50, AlertLevel::Green);
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed().as_millis() < 500 {
        decide(&registry, "acme", &state)?;
        n += 1;
    }
    let per = start.elapsed() / n;
    println!(
        "\n{n} budget-guard decisions in {:.1?}: {per:.2?} each, on one core.",
        start.elapsed()
    );
    println!("\nNext: `tollgate policy check|test|bench` on policies/target/components/*.wasm; see README.md.");
    Ok(())
}

fn decide(registry: &Registry, tenant: &str, state: &TenantState) -> Result<Decision> {
    let mut request = Request {
        request_id: "demo".into(),
        user_id: "user-7".into(),
        use_case: "chat".into(),
        model_id: "us.anthropic.claude-sonnet-4-20250514-v1:0".into(),
        base_model_id: "anthropic.claude-sonnet-4-20250514-v1:0".into(),
        estimated_input_tokens: 800,
        max_output_tokens: 1000,
        // 800 input at $3/M + 1000 output at $15/M.
        worst_case_cost: 17_400_000,
        now_ms: 1_768_435_200_000,
        ..Request::default()
    };
    Ok(registry.decide(&TenantId::new(tenant)?, &mut request, state)?)
}

fn show(decision: &Decision) {
    println!(
        "  {} by {} in {:.1?}: {}",
        describe(&decision.action),
        decision.version,
        decision.elapsed,
        decision.reason
    );
}

/// A tenant `percent` of the way through its budget, halfway through the
/// month, burning fast enough to end at twice that.
fn demo_state(tier: &str, percent: u64, alert: AlertLevel) -> TenantState {
    let mut state = TenantState::default();
    state.plan.tier = tier.into();
    state.plan.included_tokens = 2_000_000;
    state.plan.used_tokens = 2_000_000 * percent / 100 * 2;
    state.budget.limit = LIMIT.get();
    state.budget.spent = LIMIT.get() / 100 * percent;
    state.budget.period_start_ms = 1_767_225_600_000;
    state.budget.period_end_ms = 1_769_904_000_000;
    state.indicators.forecast_spend = state.budget.spent * 2;
    state.alert = alert;
    state
}

fn alert_name(level: AlertLevel) -> &'static str {
    match level {
        AlertLevel::Green => "green",
        AlertLevel::Yellow => "yellow",
        AlertLevel::Orange => "orange",
        AlertLevel::Red => "red",
    }
}

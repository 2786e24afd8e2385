//! The aggregate level: many tenants rising together, none alone alarming.

use tollgate_host::alerts::{AlertEvent, AlertSettings, Alerts, Cause, Level};
use tollgate_host::ids::TenantId;
use tollgate_host::money::NanoUsd;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const START: u64 = 1_767_225_600_000;
const PERIOD_END: u64 = START + 30 * DAY;

struct Fleet {
    alerts: Alerts,
    tenants: Vec<TenantId>,
    spent: Vec<NanoUsd>,
    limit: NanoUsd,
    tenant_events: Vec<AlertEvent>,
    aggregate_events: Vec<AlertEvent>,
}

impl Fleet {
    fn new(n: usize, limit: NanoUsd) -> Self {
        Fleet {
            alerts: Alerts::new(AlertSettings::default()).unwrap(),
            tenants: (0..n).map(|i| TenantId::new(&format!("tenant-{i}")).unwrap()).collect(),
            spent: vec![NanoUsd::ZERO; n],
            limit,
            tenant_events: Vec::new(),
            aggregate_events: Vec::new(),
        }
    }

    /// Every tenant spends `per_hour` (every 10 minutes) for `hours`.
    fn steady(&mut self, from_ms: u64, hours: u64, per_hour: NanoUsd) {
        for step in 0..hours * 6 {
            let at = from_ms + step * 10 * MINUTE;
            for i in 0..self.tenants.len() {
                self.spend(i, at, NanoUsd(per_hour.get() / 6));
            }
        }
    }

    fn spend(&mut self, i: usize, at_ms: u64, amount: NanoUsd) {
        self.alerts.record_spend(&self.tenants[i], at_ms, amount);
        self.spent[i] = self.spent[i].saturating_add(amount);
        self.observe(i, at_ms);
    }

    fn observe(&mut self, i: usize, at_ms: u64) {
        let a = self
            .alerts
            .assess(&self.tenants[i], at_ms, self.spent[i], self.limit, PERIOD_END);
        self.tenant_events.extend(a.event);
        self.aggregate_events.extend(a.aggregate_event);
    }
}

#[test]
fn many_tenants_rising_together_raise_the_aggregate() {
    let mut fleet = Fleet::new(5, NanoUsd::from_usd(100_000));
    // A week of habit, so the baselines are settled.
    fleet.steady(START, 8 * 24, NanoUsd::from_usd(1));
    assert_eq!(fleet.alerts.aggregate_level(), Level::Green);
    // Everyone at 2.5x their habit: below each tenant's own yellow (3x).
    fleet.steady(START + 8 * DAY, 24, NanoUsd::from_cents(250));
    for e in &fleet.aggregate_events {
        println!("{} -> {}: {}", e.from, e.to, e.message);
    }
    assert!(
        fleet.tenant_events.is_empty(),
        "no tenant alone alerts: {:?}",
        fleet.tenant_events
    );
    assert!(fleet.tenants.iter().all(|t| fleet.alerts.level(t) == Level::Green));
    assert_eq!(fleet.alerts.aggregate_level(), Level::Orange);
    let levels: Vec<Level> = fleet.aggregate_events.iter().map(|e| e.to).collect();
    assert_eq!(levels, [Level::Yellow, Level::Orange]);
    let last = fleet.aggregate_events.last().unwrap();
    assert_eq!(last.tenant, None, "aggregate events name no tenant");
    assert!(
        matches!(last.cause, Cause::TotalBurn { confirmed: true, .. }),
        "{}",
        last.message
    );
}

#[test]
fn a_short_burst_across_tenants_is_not_confirmed() {
    let mut fleet = Fleet::new(5, NanoUsd::from_usd(100_000));
    fleet.steady(START, 3 * 24, NanoUsd::from_usd(1));
    let burst = START + 3 * DAY;
    for i in 0..5 {
        fleet.spend(i, burst, NanoUsd::from_usd(5));
    }
    for minute in 1..60 {
        for i in 0..5 {
            fleet.observe(i, burst + minute * MINUTE);
        }
    }
    assert!(fleet.alerts.aggregate_level() <= Level::Yellow);
    assert!(fleet.aggregate_events.iter().all(|e| e.to <= Level::Yellow));
}

#[test]
fn share_of_tenants_at_orange() {
    let mut fleet = Fleet::new(5, NanoUsd::from_usd(100));
    let spend_to = |fleet: &mut Fleet, i: usize, usd: u64, at: u64| {
        fleet.spent[i] = NanoUsd::from_usd(usd);
        fleet.observe(i, at);
    };
    for i in 0..5 {
        spend_to(&mut fleet, i, 10, START);
    }
    // One of five tenants at orange: 20% → yellow.
    spend_to(&mut fleet, 0, 85, START + MINUTE);
    assert_eq!(fleet.alerts.aggregate_level(), Level::Yellow);
    // Three of five: 60% → red, though no tenant is red.
    spend_to(&mut fleet, 1, 85, START + 2 * MINUTE);
    spend_to(&mut fleet, 2, 85, START + 3 * MINUTE);
    assert_eq!(fleet.alerts.aggregate_level(), Level::Red);
    assert!(fleet.tenants.iter().all(|t| fleet.alerts.level(t) < Level::Red));
    let last = fleet.aggregate_events.last().unwrap();
    assert_eq!(last.message, "3 of 5 tenants (60%) at orange or above");
}

#[test]
fn too_few_tenants_for_a_share() {
    let mut fleet = Fleet::new(2, NanoUsd::from_usd(100));
    fleet.spent[0] = NanoUsd::from_usd(85);
    fleet.observe(0, START);
    fleet.observe(1, START);
    assert_eq!(fleet.alerts.level(&fleet.tenants[0]), Level::Orange);
    assert_eq!(fleet.alerts.aggregate_level(), Level::Green);
}

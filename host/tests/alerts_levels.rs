//! Alert levels on synthetic spend curves: time is simulated (`now_ms` is
//! passed in), so days of spending run in milliseconds.

use tollgate_host::alerts::{AlertEvent, AlertSettings, AlertThresholds, Alerts, Cause, Hysteresis, Level};
use tollgate_host::ids::TenantId;
use tollgate_host::money::NanoUsd;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const START: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z
const PERIOD_END: u64 = START + 30 * DAY;

/// One tenant spending along a curve, observed after every step.
struct Sim {
    alerts: Alerts,
    tenant: TenantId,
    limit: NanoUsd,
    spent: NanoUsd,
    events: Vec<AlertEvent>,
}

impl Sim {
    fn new(limit: NanoUsd) -> Self {
        Self::with(limit, AlertSettings::default())
    }

    fn with(limit: NanoUsd, settings: AlertSettings) -> Self {
        Sim {
            alerts: Alerts::new(settings).unwrap(),
            tenant: TenantId::new("acme").unwrap(),
            limit,
            spent: NanoUsd::ZERO,
            events: Vec::new(),
        }
    }

    fn spend(&mut self, at_ms: u64, amount: NanoUsd) {
        self.alerts.record_spend(&self.tenant, at_ms, amount);
        self.spent = self.spent.saturating_add(amount);
        self.observe(at_ms);
    }

    fn observe(&mut self, at_ms: u64) {
        let event = self
            .alerts
            .observe(&self.tenant, at_ms, self.spent, self.limit, PERIOD_END);
        self.events.extend(event);
    }

    /// Spends `per_hour` evenly (every 10 minutes) from `from_ms` for `hours`.
    fn steady(&mut self, from_ms: u64, hours: u64, per_hour: NanoUsd) {
        for step in 0..hours * 6 {
            self.spend(from_ms + step * 10 * MINUTE, NanoUsd(per_hour.get() / 6));
        }
    }

    fn levels(&self) -> Vec<Level> {
        self.events.iter().map(|e| e.to).collect()
    }

    fn max_level(&self) -> Level {
        self.events.iter().map(|e| e.to).max().unwrap_or(Level::Green)
    }
}

#[test]
fn steady_climb_goes_yellow_orange_red_in_order() {
    // A ramp: the hourly rate grows linearly, and would exhaust $100 at
    // hour 600 of a 720-hour period.
    let mut sim = Sim::new(NanoUsd::from_usd(100));
    for step in 0..720 * 6 {
        let hour = step / 6;
        sim.spend(START + step * 10 * MINUTE, NanoUsd(hour * 1_000_000_000 / 1_800 / 6));
    }
    for e in &sim.events {
        println!("{} {} -> {}: {}", (e.at_ms - START) / HOUR, e.from, e.to, e.message);
    }
    assert_eq!(
        sim.levels(),
        [Level::Yellow, Level::Orange, Level::Red],
        "no flapping, no skipping"
    );
    assert!(sim.events.iter().all(|e| e.to > e.from));
    let red = &sim.events[2];
    assert!(
        matches!(red.cause, Cause::Spend { .. }),
        "red comes from spend: {}",
        red.message
    );
    assert!(red.at_ms < PERIOD_END, "red before the budget runs out");
}

#[test]
fn one_off_spike_is_not_red() {
    let mut sim = Sim::new(NanoUsd::from_usd(10_000));
    sim.steady(START, 4 * 24, NanoUsd::from_usd(1));
    assert!(sim.events.is_empty(), "steady habit is green: {:?}", sim.levels());
    let spike_at = START + 4 * DAY;
    sim.spend(spike_at, NanoUsd::from_usd(20));
    for minute in 1..=120 {
        sim.observe(spike_at + minute * MINUTE);
    }
    sim.steady(spike_at + 2 * HOUR, 4, NanoUsd::from_usd(1));
    for e in &sim.events {
        println!("{} -> {}: {}", e.from, e.to, e.message);
    }
    // The short window sees ~21x the baseline; the long one ~1.8x: watch it,
    // but it is no red (nor orange) alert.
    assert_eq!(sim.max_level(), Level::Yellow);
    let Cause::Burn {
        confirmed,
        short_bp,
        long_bp,
        ..
    } = sim.events[0].cause
    else {
        panic!("{:?}", sim.events[0])
    };
    assert!(
        !confirmed && short_bp >= 100_000 && long_bp < 30_000,
        "{}",
        sim.events[0].message
    );
    assert!(sim.events[0].message.contains("over 1h"), "{}", sim.events[0].message);
    // Once the spike leaves the short window the level settles back.
    assert_eq!(sim.alerts.level(&sim.tenant), Level::Green);
}

#[test]
fn sustained_surge_confirmed_by_the_long_window_is_red() {
    let mut sim = Sim::new(NanoUsd::from_usd(100_000));
    sim.steady(START, 4 * 24, NanoUsd::from_usd(1));
    sim.steady(START + 4 * DAY, 24, NanoUsd::from_usd(20));
    for e in &sim.events {
        println!("{} {} -> {}: {}", (e.at_ms - START) / HOUR, e.from, e.to, e.message);
    }
    assert_eq!(sim.levels(), [Level::Yellow, Level::Orange, Level::Red]);
    let red = sim.events.last().unwrap();
    assert!(
        matches!(red.cause, Cause::Burn { confirmed: true, .. }),
        "{}",
        red.message
    );
    assert!(red.message.contains("over 1h and 24h"), "{}", red.message);
}

#[test]
fn slow_leak_is_caught_by_the_forecast_alone() {
    // $1.80/h is $1,296 over the 30-day period: 130% of a $1,000 budget,
    // though after 10 days only 43% is spent and the rate never changes.
    let mut sim = Sim::new(NanoUsd::from_usd(1_000));
    sim.steady(START, 10 * 24, NanoUsd::from_cents(180));
    assert!(
        sim.spent < NanoUsd::from_usd(500),
        "under every lagging threshold: {}",
        sim.spent
    );
    assert!(!sim.events.is_empty());
    for e in &sim.events {
        assert!(
            matches!(e.cause, Cause::Forecast { .. }),
            "only the forecast speaks: {}",
            e.message
        );
    }
    assert_eq!(sim.alerts.level(&sim.tenant), Level::Orange);
    // Yellow first while the young history underestimates the rate, then
    // orange for good: no flapping.
    assert_eq!(sim.levels(), [Level::Yellow, Level::Orange]);
    let now = START + 10 * DAY;
    let a = sim.alerts.assess(&sim.tenant, now, sim.spent, sim.limit, PERIOD_END);
    let forecast = a.indicators.forecast_spend;
    assert!(
        forecast > NanoUsd::from_usd(1_280) && forecast <= NanoUsd::from_usd(1_296),
        "{forecast}"
    );
    let (long, baseline) = (a.indicators.burn_rate_long.get(), a.indicators.baseline_burn_rate.get());
    assert!(
        (95..=105).contains(&(long * 100 / baseline)),
        "burning at its usual rate: {long} vs {baseline}"
    );
}

/// A tenant with no spend history: only spent ÷ limit speaks.
fn oscillate(sim: &mut Sim, from_ms: u64, minutes: u64, low: u64, high: u64) {
    for minute in 0..minutes {
        sim.spent = NanoUsd::from_usd(if minute % 2 == 0 { low } else { high });
        sim.observe(from_ms + minute * MINUTE);
    }
}

#[test]
fn oscillating_signal_does_not_flap() {
    let mut sim = Sim::new(NanoUsd::from_usd(100));
    // Around the orange threshold (80%) for three hours.
    oscillate(&mut sim, START, 180, 78, 82);
    assert_eq!(sim.levels(), [Level::Yellow, Level::Orange]);

    // Without hysteresis the same curve flaps every minute.
    let none = Hysteresis {
        margin_percent: 0,
        min_hold_ms: 0,
    };
    let thresholds = AlertThresholds {
        hysteresis: none,
        ..AlertThresholds::default()
    };
    let mut flappy = Sim::with(
        NanoUsd::from_usd(100),
        AlertSettings {
            thresholds,
            ..AlertSettings::default()
        },
    );
    oscillate(&mut flappy, START, 180, 78, 82);
    assert!(flappy.events.len() > 150, "{}", flappy.events.len());
}

#[test]
fn a_level_drops_only_below_the_margin_and_after_the_hold() {
    let mut sim = Sim::new(NanoUsd::from_usd(100));
    sim.spent = NanoUsd::from_usd(81);
    sim.observe(START);
    assert_eq!(sim.alerts.level(&sim.tenant), Level::Orange);
    // Budget raised: spend is now 67.5% of it, below 72% (80% less 10%).
    sim.limit = NanoUsd::from_usd(120);
    sim.observe(START + MINUTE);
    assert_eq!(
        sim.alerts.level(&sim.tenant),
        Level::Orange,
        "held for the minimum time"
    );
    sim.observe(START + 10 * MINUTE);
    assert_eq!(sim.alerts.level(&sim.tenant), Level::Yellow);
    // 73% (above 72%) would not have been enough.
    let mut sticky = Sim::new(NanoUsd::from_usd(100));
    sticky.spent = NanoUsd::from_usd(81);
    sticky.observe(START);
    sticky.spent = NanoUsd::from_usd(73);
    sticky.observe(START + HOUR);
    assert_eq!(sticky.alerts.level(&sticky.tenant), Level::Orange);
}

#[test]
fn a_new_period_starts_clean() {
    let mut sim = Sim::new(NanoUsd::from_usd(100));
    sim.spent = NanoUsd::from_usd(99);
    sim.observe(START);
    assert_eq!(sim.alerts.level(&sim.tenant), Level::Red);
    let next_end = PERIOD_END + 30 * DAY;
    let event = sim
        .alerts
        .observe(&sim.tenant, START + MINUTE, NanoUsd::ZERO, sim.limit, next_end)
        .unwrap();
    assert_eq!((event.from, event.to), (Level::Red, Level::Green));
}

#[test]
fn events_serialise_as_json() {
    let mut sim = Sim::new(NanoUsd::from_usd(100));
    sim.spent = NanoUsd::from_usd(92);
    sim.observe(START);
    let event = &sim.events[0];
    assert_eq!(event.message, "spend 92% of budget");
    let json: serde_json::Value = serde_json::to_value(event).unwrap();
    assert_eq!(json["tenant"], "acme");
    assert_eq!(json["from"], "green");
    assert_eq!(json["to"], "orange");
    assert_eq!(json["cause"]["signal"], "spend");
    assert_eq!(json["cause"]["ratio-bp"], 9_200);
    assert_eq!(json["figures"]["spent"], 92_000_000_000u64);
    assert_eq!(json["figures"]["limit"], 100_000_000_000u64);
    assert_eq!(json["at-ms"], START);
    let back: AlertEvent = serde_json::from_value(json).unwrap();
    assert_eq!(&back, event);
    assert_eq!(sim.alerts.sink().recent().len(), 1);
}

#[test]
fn bad_settings_are_refused_and_odd_inputs_do_not_panic() {
    let mut settings = AlertSettings::default();
    settings.thresholds.hysteresis.margin_percent = 100;
    assert!(Alerts::new(settings).is_err());
    let settings: AlertSettings =
        toml::from_str("[thresholds]\nspend-percent = { yellow = 60, orange = 85 }\n").unwrap();
    assert_eq!(settings.thresholds.spend_percent.red, None);
    let alerts = Alerts::new(settings).unwrap();
    let t = TenantId::new("t").unwrap();
    alerts.record_spend(&t, u64::MAX, NanoUsd(u64::MAX));
    alerts.record_spend(&t, 0, NanoUsd(u64::MAX));
    let a = alerts.assess(&t, u64::MAX, NanoUsd(u64::MAX), NanoUsd::ZERO, 0);
    assert_eq!(a.indicators.forecast_spend, NanoUsd(u64::MAX));
    let a = alerts.assess(&t, 0, NanoUsd(u64::MAX), NanoUsd(1), u64::MAX);
    assert_eq!(
        a.level,
        Level::Orange,
        "no red step configured for spend; forecast orange"
    );
}

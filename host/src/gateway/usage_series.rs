//! Recent usage per tenant, in memory, for the dashboard: cost and
//! decisions per minute, and the users and use cases that cost the most.
//!
//! Fed one finished call's record at a time (from settlement, off the
//! caller's path). Memory is bounded whatever callers send:
//! * minutes are kept for [`RETENTION_MINUTES`] (24 h), per tenant;
//! * users and use cases are caller-chosen strings, so each hour keeps at
//!   most [`TRACKED_NAMES`] of each; a new name past that evicts the
//!   cheapest one, whose cost moves to "other" (totals stay exact, and a
//!   name that costs much stays listed however many cheap ones arrive);
//! * names are cut to [`MAX_NAME_CHARS`], and at most [`MAX_TENANTS`] tenants
//!   are followed (tenants come from credentials, so this is a backstop).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::Serialize;

use super::invocation_log::InvocationRecord;
use super::metadata::keys;

/// Minutes kept per tenant.
pub const RETENTION_MINUTES: u64 = 24 * 60;
/// Users (and, separately, use cases) kept per tenant per hour.
pub const TRACKED_NAMES: usize = 64;
/// Longest user or use-case name kept, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Tenants followed; calls of further tenants are only counted.
pub const MAX_TENANTS: usize = 4096;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const HOURS_KEPT: u64 = RETENTION_MINUTES / 60;

/// The verdicts charted, in this order; anything else counts as `invalid`.
pub const DECISIONS: [&str; 5] = ["admit", "downgrade", "throttle", "reject", "invalid"];

/// One minute of one tenant's calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Minute {
    /// Start of the minute, milliseconds since the epoch.
    pub at_ms: u64,
    pub cost_nano_usd: u64,
    pub calls: u64,
    /// Calls per verdict, in the order of [`DECISIONS`].
    pub decisions: [u64; 5],
}

/// A user or use case and what it cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Ranked {
    pub name: String,
    pub cost_nano_usd: u64,
    pub calls: u64,
}

/// The costliest names over the retention, and the rest folded together.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Top {
    pub top: Vec<Ranked>,
    pub other: Ranked,
}

/// A tenant's recent usage, as the dashboard draws it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantSeries {
    /// Minutes with calls, oldest first.
    pub minutes: Vec<Minute>,
    pub users: Top,
    pub use_cases: Top,
}

/// Names and their cost, at most [`TRACKED_NAMES`] of them.
#[derive(Debug, Default)]
struct Names {
    tracked: HashMap<String, (u64, u64)>,
    other: (u64, u64),
}

impl Names {
    fn add(&mut self, name: &str, cost: u64, calls: u64) {
        if let Some(entry) = self.tracked.get_mut(name) {
            entry.0 = entry.0.saturating_add(cost);
            entry.1 += calls;
            return;
        }
        if self.tracked.len() >= TRACKED_NAMES {
            let cheapest = self
                .tracked
                .iter()
                .min_by_key(|(_, (cost, calls))| (*cost, *calls))
                .map(|(name, _)| name.clone());
            if let Some((cost, calls)) = cheapest.and_then(|name| self.tracked.remove(&name)) {
                self.other.0 = self.other.0.saturating_add(cost);
                self.other.1 += calls;
            }
        }
        self.tracked.insert(name.to_owned(), (cost, calls));
    }
}

/// One hour's names.
#[derive(Debug)]
struct Hour {
    at_ms: u64,
    users: Names,
    use_cases: Names,
}

#[derive(Debug, Default)]
struct Tenant {
    minutes: VecDeque<Minute>,
    hours: VecDeque<Hour>,
}

impl Tenant {
    fn add(&mut self, at_ms: u64, call: &CallFigures<'_>) {
        let minute_at = at_ms - at_ms % MINUTE_MS;
        // Records arrive nearly in order; one a little late joins its minute.
        let index = match self.minutes.iter().rposition(|m| m.at_ms <= minute_at) {
            Some(i) if self.minutes[i].at_ms == minute_at => i,
            Some(i) => {
                self.minutes.insert(i + 1, blank(minute_at));
                i + 1
            }
            None => {
                self.minutes.push_front(blank(minute_at));
                0
            }
        };
        let minute = &mut self.minutes[index];
        minute.cost_nano_usd = minute.cost_nano_usd.saturating_add(call.cost);
        minute.calls += 1;
        minute.decisions[decision_index(call.decision)] += 1;

        let hour_at = at_ms - at_ms % HOUR_MS;
        if self.hours.back().is_none_or(|h| h.at_ms < hour_at) {
            self.hours.push_back(Hour {
                at_ms: hour_at,
                users: Names::default(),
                use_cases: Names::default(),
            });
        }
        let hour = match self.hours.iter_mut().rev().find(|h| h.at_ms <= hour_at) {
            Some(hour) => hour,
            // Older than every hour kept: it is past the retention anyway.
            None => return,
        };
        hour.users.add(call.user, call.cost, 1);
        hour.use_cases.add(call.use_case, call.cost, 1);
        self.expire(at_ms);
    }

    fn expire(&mut self, now_ms: u64) {
        let oldest_minute = now_ms.saturating_sub(RETENTION_MINUTES * MINUTE_MS);
        while self.minutes.front().is_some_and(|m| m.at_ms < oldest_minute) {
            self.minutes.pop_front();
        }
        while self.minutes.len() as u64 > RETENTION_MINUTES {
            self.minutes.pop_front();
        }
        let oldest_hour = now_ms.saturating_sub(HOURS_KEPT * HOUR_MS);
        while self.hours.front().is_some_and(|h| h.at_ms < oldest_hour) || self.hours.len() as u64 > HOURS_KEPT {
            self.hours.pop_front();
        }
    }

    fn view(&self, top: usize) -> TenantSeries {
        TenantSeries {
            minutes: self.minutes.iter().copied().collect(),
            users: ranked(self.hours.iter().map(|h| &h.users), top),
            use_cases: ranked(self.hours.iter().map(|h| &h.use_cases), top),
        }
    }
}

fn blank(at_ms: u64) -> Minute {
    Minute {
        at_ms,
        ..Minute::default()
    }
}

fn decision_index(decision: &str) -> usize {
    DECISIONS[..4].iter().position(|d| *d == decision).unwrap_or(4)
}

/// The hours' names merged, the `top` costliest first, the rest as other.
fn ranked<'a>(hours: impl Iterator<Item = &'a Names>, top: usize) -> Top {
    let mut merged: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut other = (0u64, 0u64);
    for names in hours {
        for (name, (cost, calls)) in &names.tracked {
            let entry = merged.entry(name.as_str()).or_default();
            entry.0 = entry.0.saturating_add(*cost);
            entry.1 += calls;
        }
        other.0 = other.0.saturating_add(names.other.0);
        other.1 += names.other.1;
    }
    let mut all: Vec<Ranked> = merged
        .into_iter()
        .map(|(name, (cost, calls))| Ranked {
            name: name.to_owned(),
            cost_nano_usd: cost,
            calls,
        })
        .collect();
    all.sort_by(|a, b| b.cost_nano_usd.cmp(&a.cost_nano_usd).then(a.name.cmp(&b.name)));
    for rest in all.iter().skip(top) {
        other.0 = other.0.saturating_add(rest.cost_nano_usd);
        other.1 += rest.calls;
    }
    all.truncate(top);
    Top {
        top: all,
        other: Ranked {
            name: "other".into(),
            cost_nano_usd: other.0,
            calls: other.1,
        },
    }
}

/// What the series takes from a record.
struct CallFigures<'a> {
    cost: u64,
    decision: &'a str,
    user: &'a str,
    use_case: &'a str,
}

/// Every tenant's recent usage. `Send + Sync`; share it in an `Arc`.
/// A lock per tenant, so calls of different tenants never wait on each other.
#[derive(Debug, Default)]
pub struct UsageSeries {
    tenants: RwLock<HashMap<String, Arc<Mutex<Tenant>>>>,
}

impl UsageSeries {
    pub fn new() -> UsageSeries {
        UsageSeries::default()
    }

    /// Adds one finished call, at `at_ms`.
    pub fn record(&self, record: &InvocationRecord, at_ms: u64) {
        let fields = &record.tollgate;
        let text = |key: &str| {
            record
                .request_metadata
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map_or("(none)", |v| cut(v, MAX_NAME_CHARS))
        };
        // tollgate's own fields name the caller on refused calls too.
        let user = fields.user.as_deref().filter(|v| !v.is_empty());
        let use_case = fields.use_case.as_deref().filter(|v| !v.is_empty());
        let call = CallFigures {
            cost: fields.cost_nano_usd,
            decision: &fields.decision,
            user: user.map_or_else(|| text(keys::USER), |v| cut(v, MAX_NAME_CHARS)),
            use_case: use_case.map_or_else(|| text(keys::USE_CASE), |v| cut(v, MAX_NAME_CHARS)),
        };
        let known = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fields.tenant)
            .cloned();
        let entry = match known {
            Some(entry) => entry,
            None => {
                let mut tenants = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
                if !tenants.contains_key(&fields.tenant) && tenants.len() >= MAX_TENANTS {
                    return;
                }
                Arc::clone(tenants.entry(fields.tenant.clone()).or_default())
            }
        };
        entry.lock().unwrap_or_else(PoisonError::into_inner).add(at_ms, &call);
    }

    /// A tenant's usage as of `now_ms`, with its `top` costliest users and use cases.
    pub fn tenant(&self, tenant: &str, now_ms: u64, top: usize) -> TenantSeries {
        let entry = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .cloned();
        entry.map_or_else(TenantSeries::default, |t| {
            let mut t = t.lock().unwrap_or_else(PoisonError::into_inner);
            t.expire(now_ms);
            t.view(top)
        })
    }

    /// Names and minutes held, over every tenant: what bounds the memory.
    pub fn held(&self) -> (usize, usize) {
        let tenants = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
        tenants.values().fold((0, 0), |(names, minutes), t| {
            let t = t.lock().unwrap_or_else(PoisonError::into_inner);
            let in_hours: usize = t
                .hours
                .iter()
                .map(|h| h.users.tracked.len() + h.use_cases.tracked.len())
                .sum();
            (names + in_hours, minutes + t.minutes.len())
        })
    }
}

/// `text` cut to at most `max` characters, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    text.char_indices().nth(max).map_or(text, |(end, _)| &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::invocation_log::TollgateFields;

    fn record(tenant: &str, user: &str, use_case: &str, decision: &str, cost: u64) -> InvocationRecord {
        let mut metadata = serde_json::Map::new();
        metadata.insert(keys::USER.into(), user.into());
        metadata.insert(keys::USE_CASE.into(), use_case.into());
        InvocationRecord {
            schema_type: String::new(),
            schema_version: String::new(),
            timestamp: String::new(),
            request_id: String::new(),
            operation: String::new(),
            model_id: String::new(),
            input: Default::default(),
            output: Default::default(),
            request_metadata: metadata,
            tollgate: TollgateFields {
                tenant: tenant.into(),
                decision: decision.into(),
                cost_nano_usd: cost,
                ..TollgateFields::default()
            },
        }
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn calls_land_in_their_minute_with_their_verdict() {
        let series = UsageSeries::new();
        series.record(&record("acme", "ann", "chat", "admit", 100), T0);
        series.record(&record("acme", "bob", "chat", "reject", 0), T0 + 1_000);
        series.record(&record("acme", "ann", "search", "downgrade", 50), T0 + MINUTE_MS);
        series.record(&record("acme", "ann", "chat", "nonsense", 0), T0 + 2);
        let view = series.tenant("acme", T0 + MINUTE_MS, 10);
        assert_eq!(view.minutes.len(), 2);
        assert_eq!(view.minutes[0].cost_nano_usd, 100);
        assert_eq!(view.minutes[0].decisions, [1, 0, 0, 1, 1]);
        assert_eq!(view.minutes[1].decisions, [0, 1, 0, 0, 0]);
        assert_eq!(view.users.top[0].name, "ann");
        assert_eq!(view.users.top[0].cost_nano_usd, 150);
        assert_eq!(view.use_cases.top[0].name, "chat");
        assert_eq!(series.tenant("globex", T0, 10), TenantSeries::default());
    }

    #[test]
    fn hostile_callers_inventing_users_cannot_grow_memory() {
        let series = UsageSeries::new();
        // A real, costly user, then a flood of invented ones across a day and more.
        series.record(&record("acme", "alice", "chat", "admit", 1_000_000), T0);
        let flood = 200_000u64;
        for i in 0..flood {
            let at = T0 + i * (30 * HOUR_MS / flood);
            let name = format!("user-{i}-{}", "x".repeat(i as usize % 300));
            series.record(&record("acme", &name, &name, "admit", 1), at);
        }
        let (names, minutes) = series.held();
        assert!(names <= 2 * TRACKED_NAMES * HOURS_KEPT as usize, "{names} names held");
        assert!(minutes <= RETENTION_MINUTES as usize, "{minutes} minutes held");
        let now = T0 + 30 * HOUR_MS;
        let view = series.tenant("acme", now, 5);
        assert_eq!(view.users.top.len(), 5);
        assert!(view.users.top.iter().all(|r| r.name.chars().count() <= MAX_NAME_CHARS));
        // Alice's hour is past the retention now; within it she led.
        assert!(view.users.top.iter().all(|r| r.name != "alice"));
        // The flood's cheapest names were folded together, not kept one by one.
        assert!(view.users.other.calls > 0);
    }

    #[test]
    fn a_costly_user_stays_listed_among_many_cheap_ones() {
        let series = UsageSeries::new();
        series.record(&record("acme", "alice", "chat", "admit", 1_000_000), T0);
        for i in 0..10_000u64 {
            series.record(&record("acme", &format!("u{i}"), "chat", "admit", 1), T0 + 1);
        }
        let view = series.tenant("acme", T0 + 2, 3);
        assert_eq!(view.users.top[0].name, "alice");
        assert_eq!(view.users.top[0].cost_nano_usd, 1_000_000);
        let total: u64 = view.users.top.iter().map(|r| r.cost_nano_usd).sum::<u64>() + view.users.other.cost_nano_usd;
        assert_eq!(total, 1_000_000 + 10_000);
        assert_eq!(view.users.other.calls + 3, 10_001);
    }

    #[test]
    fn tenants_past_the_cap_are_not_followed() {
        let series = UsageSeries::new();
        for i in 0..MAX_TENANTS + 10 {
            series.record(&record(&format!("t{i}"), "u", "c", "admit", 1), T0);
        }
        assert_eq!(series.tenants.read().expect("lock").len(), MAX_TENANTS);
    }
}

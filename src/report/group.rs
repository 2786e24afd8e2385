//! Aggregation: each call is added to its group's totals as it is read, so
//! memory grows with the number of groups, never with the number of calls.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};

/// One call as both log formats describe it, borrowed from its line.
pub struct Call<'a> {
    pub at: DateTime<Utc>,
    /// Empty when the record does not say.
    pub tenant: &'a str,
    pub user: &'a str,
    pub use_case: &'a str,
    pub model: &'a str,
    pub decision: &'a str,
    pub tokens: Tokens,
    /// Nano-dollars; `None` when the model has no price.
    pub cost: Option<u64>,
    pub savings: Savings,
}

/// What a downgrade saved against the model asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Savings {
    /// Not a downgrade (or nothing was charged).
    None,
    /// Nano-dollars: the requested model's price of the same usage minus the
    /// charge. Negative when a policy downgraded to a dearer model.
    Saved(i64),
    /// A downgrade whose requested model or usage cannot be priced.
    Unknown,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

/// What a report can group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dimension {
    Tenant,
    User,
    UseCase,
    Model,
    Decision,
    /// The UTC date.
    Day,
}

impl Dimension {
    pub const ALL: [Dimension; 6] = [
        Dimension::Tenant,
        Dimension::User,
        Dimension::UseCase,
        Dimension::Model,
        Dimension::Decision,
        Dimension::Day,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dimension::Tenant => "tenant",
            Dimension::User => "user",
            Dimension::UseCase => "use-case",
            Dimension::Model => "model",
            Dimension::Decision => "decision",
            Dimension::Day => "day",
        }
    }

    /// Parses `--by tenant,model,day`.
    pub fn parse_list(text: &str) -> Result<Vec<Dimension>> {
        let mut dims = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let word = word.replace('_', "-").to_ascii_lowercase();
            let Some(dim) = Dimension::ALL.into_iter().find(|d| d.name() == word) else {
                bail!(
                    "--by {word:?} is not a grouping; use any of {} separated by commas",
                    Dimension::ALL.map(Dimension::name).join(", ")
                );
            };
            if dims.contains(&dim) {
                bail!("--by names {word} twice");
            }
            dims.push(dim);
        }
        if dims.is_empty() {
            bail!("--by names no grouping; e.g. --by tenant,model,day");
        }
        Ok(dims)
    }
}

/// One group's sums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u64,
    pub admitted: u64,
    pub downgraded: u64,
    pub throttled: u64,
    pub rejected: u64,
    /// Calls refused before a policy ran (`invalid`), or with no decision recorded.
    pub other: u64,
    /// Nano-dollars, over the priced calls.
    pub spend: u64,
    pub unpriced_calls: u64,
    /// Nano-dollars the downgrades saved.
    pub savings: i64,
    pub savings_unknown: u64,
    pub tokens: Tokens,
}

impl Totals {
    fn add(&mut self, call: &Call) {
        self.calls += 1;
        match call.decision {
            "admit" => self.admitted += 1,
            "downgrade" => self.downgraded += 1,
            "throttle" => self.throttled += 1,
            "reject" => self.rejected += 1,
            _ => self.other += 1,
        }
        match call.cost {
            Some(cost) => self.spend = self.spend.saturating_add(cost),
            None => self.unpriced_calls += 1,
        }
        match call.savings {
            Savings::None => {}
            Savings::Saved(n) => self.savings = self.savings.saturating_add(n),
            Savings::Unknown => self.savings_unknown += 1,
        }
        let t = &mut self.tokens;
        t.input = t.input.saturating_add(call.tokens.input);
        t.output = t.output.saturating_add(call.tokens.output);
        t.cache_read = t.cache_read.saturating_add(call.tokens.cache_read);
        t.cache_write = t.cache_write.saturating_add(call.tokens.cache_write);
    }

    /// `part` of the calls, in percent.
    pub fn percent(&self, part: u64) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            part as f64 * 100.0 / self.calls as f64
        }
    }
}

/// Separates the parts of a group's key; no id, model or date contains it.
const SEPARATOR: char = '\u{1f}';

/// The groups so far, and the grand total.
pub struct Groups {
    dims: Vec<Dimension>,
    groups: HashMap<String, Totals>,
    pub total: Totals,
    key: String,
}

impl Groups {
    pub fn new(dims: Vec<Dimension>) -> Groups {
        Groups {
            dims,
            groups: HashMap::new(),
            total: Totals::default(),
            key: String::new(),
        }
    }

    pub fn dims(&self) -> &[Dimension] {
        &self.dims
    }

    pub fn add(&mut self, call: &Call) {
        self.total.add(call);
        self.key.clear();
        for (i, dim) in self.dims.iter().enumerate() {
            if i > 0 {
                self.key.push(SEPARATOR);
            }
            match dim {
                Dimension::Tenant => self.key.push_str(call.tenant),
                Dimension::User => self.key.push_str(call.user),
                Dimension::UseCase => self.key.push_str(call.use_case),
                Dimension::Model => self.key.push_str(call.model),
                Dimension::Decision => self.key.push_str(call.decision),
                Dimension::Day => {
                    let _ = write!(self.key, "{}", call.at.date_naive());
                }
            }
        }
        // Looked up by the borrowed key, so only a new group allocates.
        match self.groups.get_mut(self.key.as_str()) {
            Some(totals) => totals.add(call),
            None => {
                let mut totals = Totals::default();
                totals.add(call);
                self.groups.insert(self.key.clone(), totals);
            }
        }
    }

    /// Every group as (its key, its totals), in key order: by the first
    /// dimension's value, then the second's... (the separator sorts below
    /// every character a value holds). [`parts`] splits a key.
    pub fn rows(&self) -> Vec<(&str, &Totals)> {
        let mut rows: Vec<(&str, &Totals)> = self.groups.iter().map(|(k, t)| (k.as_str(), t)).collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        rows
    }
}

/// A group key's value of each dimension, in the grouping's order.
pub fn parts(key: &str) -> impl Iterator<Item = &str> {
    key.split(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call<'a>(tenant: &'a str, decision: &'a str, day: u32, cost: Option<u64>) -> Call<'a> {
        Call {
            at: DateTime::parse_from_rfc3339(&format!("2026-11-{day:02}T10:00:00Z"))
                .expect("time")
                .to_utc(),
            tenant,
            user: "",
            use_case: "chat",
            model: "amazon.nova-micro-v1:0",
            decision,
            tokens: Tokens {
                input: 10,
                output: 5,
                ..Tokens::default()
            },
            cost,
            savings: Savings::None,
        }
    }

    #[test]
    fn groups_by_any_combination_and_totals_every_call() {
        let mut groups = Groups::new(Dimension::parse_list("tenant, day").expect("dims"));
        groups.add(&call("acme", "admit", 1, Some(100)));
        groups.add(&call("acme", "throttle", 1, Some(0)));
        groups.add(&call("acme", "admit", 2, None));
        groups.add(&call("globex", "reject", 1, Some(0)));
        let rows = groups.rows();
        let keys: Vec<Vec<&str>> = rows.iter().map(|r| parts(r.0).collect()).collect();
        assert_eq!(
            keys,
            [
                vec!["acme", "2026-11-01"],
                vec!["acme", "2026-11-02"],
                vec!["globex", "2026-11-01"]
            ]
        );
        assert_eq!((rows[0].1.calls, rows[0].1.throttled, rows[0].1.spend), (2, 1, 100));
        assert_eq!(rows[0].1.percent(rows[0].1.throttled), 50.0);
        assert_eq!(rows[1].1.unpriced_calls, 1);
        assert_eq!(
            (groups.total.calls, groups.total.rejected, groups.total.spend),
            (4, 1, 100)
        );
        assert_eq!(groups.total.tokens.input, 40);
    }

    #[test]
    fn a_bad_grouping_says_what_is_allowed() {
        let err = Dimension::parse_list("tenant,colour").unwrap_err().to_string();
        assert!(err.contains("\"colour\"") && err.contains("use-case"), "{err}");
        assert_eq!(Dimension::parse_list("use_case").expect("dims"), [Dimension::UseCase]);
        assert!(Dimension::parse_list("day,day").is_err());
    }
}

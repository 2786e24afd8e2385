//! What a replay found: per tenant, the verdicts and money as recorded and
//! as the candidate would have had them, the calls whose outcome changes,
//! and the first few of those in detail. Money stays in nano-dollars.

use std::collections::BTreeMap;

use serde::Serialize;

use super::log_stream::{LoggedCall, Verdict};
use super::simulation::Candidate;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerdictCounts {
    pub admit: u64,
    pub downgrade: u64,
    pub throttle: u64,
    pub reject: u64,
}

impl VerdictCounts {
    fn count(&mut self, verdict: Verdict) {
        let slot = match verdict {
            Verdict::Admit => &mut self.admit,
            Verdict::Downgrade => &mut self.downgrade,
            Verdict::Throttle => &mut self.throttle,
            Verdict::Reject => &mut self.reject,
        };
        *slot += 1;
    }

    fn add(&mut self, other: &VerdictCounts) {
        self.admit += other.admit;
        self.downgrade += other.downgrade;
        self.throttle += other.throttle;
        self.reject += other.reject;
    }
}

/// One tenant's figures (or every tenant's, summed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantTally {
    /// Calls replayed: those that reached a policy live.
    pub calls: u64,
    pub recorded: VerdictCounts,
    pub candidate: VerdictCounts,
    pub recorded_spend_nano_usd: u64,
    pub candidate_spend_nano_usd: u64,
    /// Recorded minus candidate spend: what the candidate saves (negative: what it costs more).
    pub saved_nano_usd: i64,
    /// Calls whose verdict or model changes.
    pub changed_calls: u64,
    /// Of the candidate's spend, what is the worst case of calls refused
    /// live (the log has no usage for them).
    pub estimated_spend_nano_usd: u64,
}

impl TenantTally {
    fn add(&mut self, other: &TenantTally) {
        self.calls += other.calls;
        self.recorded.add(&other.recorded);
        self.candidate.add(&other.candidate);
        self.recorded_spend_nano_usd += other.recorded_spend_nano_usd;
        self.candidate_spend_nano_usd += other.candidate_spend_nano_usd;
        self.changed_calls += other.changed_calls;
        self.estimated_spend_nano_usd += other.estimated_spend_nano_usd;
        self.settle();
    }

    fn settle(&mut self) {
        let saved = i128::from(self.recorded_spend_nano_usd) - i128::from(self.candidate_spend_nano_usd);
        self.saved_nano_usd = i64::try_from(saved).unwrap_or(if saved < 0 { i64::MIN } else { i64::MAX });
    }
}

/// One side of a changed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub verdict: &'static str,
    pub model: String,
    pub cost_nano_usd: u64,
}

/// A call whose outcome changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub request_id: String,
    pub tenant: String,
    pub at_ms: u64,
    pub recorded: Outcome,
    pub candidate: Outcome,
    /// The candidate's cost is the call's worst case (it was refused live).
    pub estimated: bool,
    /// The candidate's reason.
    pub reason: String,
}

/// Records left out, by why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// Refused before any policy ran (invalid requests, bad credentials, a disabled tenant).
    pub before_policy: u64,
    /// Tenants in the log but not in the configuration, with their records.
    pub unknown_tenants: BTreeMap<String, u64>,
    /// Tenants left out with `--tenant`.
    pub not_selected: u64,
    /// Records that could not be replayed (a model the price book cannot price, say).
    pub unreplayable: u64,
    /// Why the first of those could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_unreplayable: Option<String>,
}

/// Everything a replay reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Records read.
    pub records: u64,
    pub skipped: Skipped,
    pub tenants: BTreeMap<String, TenantTally>,
    pub total: TenantTally,
    /// The first `--show` changed calls, in log order.
    pub differences: Vec<Difference>,
    #[serde(skip)]
    show: usize,
}

impl Tally {
    pub fn new(show: usize) -> Tally {
        Tally {
            show,
            ..Tally::default()
        }
    }

    /// Books one replayed call.
    pub fn replayed(&mut self, call: &LoggedCall, recorded: Verdict, candidate: &Candidate) {
        let tenant = match self.tenants.get_mut(&call.tenant) {
            Some(tenant) => tenant,
            None => self.tenants.entry(call.tenant.clone()).or_default(),
        };
        tenant.calls += 1;
        tenant.recorded.count(recorded);
        tenant.candidate.count(candidate.verdict);
        tenant.recorded_spend_nano_usd += call.cost;
        tenant.candidate_spend_nano_usd += candidate.cost;
        if candidate.estimated {
            tenant.estimated_spend_nano_usd += candidate.cost;
        }
        let changed =
            recorded != candidate.verdict || (recorded.forwarded() && call.served() != candidate.model.as_str());
        if !changed {
            return;
        }
        tenant.changed_calls += 1;
        if self.differences.len() < self.show {
            self.differences.push(Difference {
                request_id: call.request_id.clone(),
                tenant: call.tenant.clone(),
                at_ms: call.at_ms,
                recorded: Outcome {
                    verdict: recorded.name(),
                    model: call.served().to_owned(),
                    cost_nano_usd: call.cost,
                },
                candidate: Outcome {
                    verdict: candidate.verdict.name(),
                    model: candidate.model.clone(),
                    cost_nano_usd: candidate.cost,
                },
                estimated: candidate.estimated,
                reason: candidate.reason.clone(),
            });
        }
    }

    /// Sums the tenants once every record is in.
    pub fn close(&mut self) {
        let mut total = TenantTally::default();
        for tenant in self.tenants.values_mut() {
            tenant.settle();
            total.add(tenant);
        }
        self.total = total;
    }

    pub fn changed_calls(&self) -> u64 {
        self.total.changed_calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::log_stream::parse_line;

    fn call(decision: &str, served: &str, cost: u64) -> LoggedCall {
        let line = format!(
            r#"{{"timestamp":"2026-01-01T00:00:00.000Z","operation":"Converse","tollgate":{{"requestId":"tg-1","tenant":"acme","decision":"{decision}","policyVersion":"v1","requestedModelId":"m-big","servedModelId":"{served}","estimatedInputTokens":1,"maxOutputTokens":1,"costNanoUsd":{cost},"chargedFrom":"usage"}}}}"#
        );
        parse_line(&line).expect("record")
    }

    fn candidate(verdict: Verdict, model: &str, cost: u64) -> Candidate {
        Candidate {
            verdict,
            model: model.into(),
            cost,
            estimated: false,
            reason: "why".into(),
        }
    }

    #[test]
    fn same_verdict_and_model_is_no_change_and_money_is_summed_exactly() {
        let mut tally = Tally::new(5);
        let live = call("admit", "m-big", 700);
        tally.replayed(&live, Verdict::Admit, &candidate(Verdict::Admit, "m-big", 700));
        let live = call("downgrade", "m-small", 300);
        tally.replayed(&live, Verdict::Downgrade, &candidate(Verdict::Reject, "m-big", 0));
        let live = call("downgrade", "m-small", 300);
        tally.replayed(&live, Verdict::Downgrade, &candidate(Verdict::Downgrade, "m-tiny", 100));
        tally.close();
        let acme = &tally.tenants["acme"];
        assert_eq!(acme.calls, 3);
        assert_eq!(acme.changed_calls, 2, "a reject, and a downgrade to another model");
        assert_eq!(acme.recorded_spend_nano_usd, 1_300);
        assert_eq!(acme.candidate_spend_nano_usd, 800);
        assert_eq!(acme.saved_nano_usd, 500);
        assert_eq!(acme.candidate.reject, 1);
        assert_eq!(tally.total, *acme);
        assert_eq!(tally.differences.len(), 2);
        assert_eq!(tally.differences[0].recorded.model, "m-small");
        assert_eq!(tally.differences[0].candidate.verdict, "reject");
    }

    #[test]
    fn only_the_first_few_differences_are_kept() {
        let mut tally = Tally::new(1);
        for _ in 0..3 {
            let live = call("admit", "m-big", 10);
            tally.replayed(&live, Verdict::Admit, &candidate(Verdict::Throttle, "m-big", 0));
        }
        tally.close();
        assert_eq!(tally.changed_calls(), 3);
        assert_eq!(tally.differences.len(), 1);
        assert_eq!(tally.total.saved_nano_usd, 30);
    }
}

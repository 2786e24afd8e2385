//! Reconciliation: every charge in an invocation log recomputed from the
//! record alone, and per-tenant totals to hold against the ledger.
//!
//! A record charged from usage is repriced from its `billing` (the region,
//! tier, latency mode and every token count) with the price book given; a
//! record charged its hold must show the hold; a released one, nothing.

use std::collections::{BTreeMap, HashSet};

use super::invocation_log::InvocationRecord;
use super::restored::{self, joining_hold};
use crate::pricing::{Catalog, Metered, RegionalCatalogs, ServedAs};

/// One record whose logged cost is not what it recomputes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub request_id: String,
    pub tenant: String,
    pub logged: u64,
    /// What it should have cost, or why that cannot be told.
    pub recomputed: Result<u64, String>,
}

/// A tenant's sums over the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantTotals {
    /// The sum of the logged costs.
    pub logged: u64,
    /// The sum of the recomputed costs (the logged one where it could not be recomputed).
    pub recomputed: u64,
    /// Records that charged something or settled from usage.
    pub charged_calls: u64,
}

/// The outcome of repricing a log.
#[derive(Debug, Clone, Default)]
pub struct Reconciliation {
    pub records: usize,
    pub mismatches: Vec<Mismatch>,
    /// Records priced with another price book than the one given (prices
    /// may have changed since; their recomputed cost still has to match).
    pub other_price_books: usize,
    /// Restored charges of holds whose calls' own records are in the logs
    /// too: left out of the totals (see [`reconcile`]).
    pub superseded: usize,
    pub tenants: BTreeMap<String, TenantTotals>,
}

impl Reconciliation {
    /// Every record recomputes to its logged cost.
    pub fn is_exact(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Recomputes one record's cost from the record alone.
pub fn reprice(catalog: &Catalog, record: &InvocationRecord) -> Result<u64, String> {
    let t = &record.tollgate;
    match t.charged_from.as_str() {
        "usage" => {
            let billing = t
                .billing
                .as_ref()
                .ok_or("charged from usage, but the record has no billing section")?;
            let usage = billing.usage.ok_or("the billing section has no usage")?;
            let regional;
            let catalog = if billing.region == catalog.region() {
                catalog
            } else {
                regional = catalog.clone().in_region(&billing.region).map_err(|e| e.to_string())?;
                &regional
            };
            let model = t.served_model_id.as_deref().unwrap_or(&t.requested_model_id);
            let metered = Metered {
                usage: usage.into(),
                served_as: ServedAs {
                    tier: billing.service_tier,
                    latency: billing.latency,
                },
            };
            catalog
                .charge(model, &metered)
                .map(|c| c.cost.get())
                .map_err(|e| e.to_string())
        }
        "reservation" => Ok(t.reserved_nano_usd),
        "released" | "none" => Ok(0),
        other => Err(format!("the charge failed: {other}")),
    }
}

/// A restored charge (a hold charged in full when its call's process was
/// gone) and a record of the call itself, for the same tenant and hold:
/// only a Redis fleet writes both, when the call's own replica wrote its
/// outcome after another had adopted and charged the hold. That outcome
/// replaced the charge in the ledger, so the restored record is superseded.
/// Allowance ids are unique within one process only and join nothing.
fn superseded(records: &[InvocationRecord]) -> HashSet<(&str, u64)> {
    let joined = |restored: bool| {
        records
            .iter()
            .filter(move |r| is_restored(r) == restored)
            .filter_map(|r| Some((r.tollgate.tenant.as_str(), joining_hold(r.tollgate.reservation)?)))
    };
    let calls: HashSet<(&str, u64)> = joined(false).collect();
    joined(true).filter(|key| calls.contains(key)).collect()
}

fn is_restored(record: &InvocationRecord) -> bool {
    restored::is_restored(&record.tollgate.request_id)
}

/// Reprices every record of the logs given (every replica's, for a fleet).
pub fn reconcile(catalog: &Catalog, records: &[InvocationRecord]) -> Reconciliation {
    let mut out = Reconciliation {
        records: records.len(),
        ..Reconciliation::default()
    };
    let superseded = superseded(records);
    let mut regional = RegionalCatalogs::new(catalog.clone());
    for record in records {
        let t = &record.tollgate;
        if is_restored(record)
            && t.reservation
                .is_some_and(|id| superseded.contains(&(t.tenant.as_str(), id)))
        {
            out.superseded += 1;
            continue;
        }
        let recomputed = match regional.get(t.billing.as_ref().map(|b| b.region.as_str())) {
            Ok(book) => {
                if t.billing.as_ref().is_some_and(|b| b.price_book != book.version()) {
                    out.other_price_books += 1;
                }
                reprice(book, record)
            }
            Err(e) => Err(e),
        };
        let totals = out.tenants.entry(t.tenant.clone()).or_default();
        totals.logged = totals.logged.saturating_add(t.cost_nano_usd);
        totals.recomputed = totals
            .recomputed
            .saturating_add(*recomputed.as_ref().unwrap_or(&t.cost_nano_usd));
        if matches!(t.charged_from.as_str(), "usage" | "reservation") {
            totals.charged_calls += 1;
        }
        if recomputed.as_ref() != Ok(&t.cost_nano_usd) {
            out.mismatches.push(Mismatch {
                request_id: t.request_id.clone(),
                tenant: t.tenant.clone(),
                logged: t.cost_nano_usd,
                recomputed,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::invocation_log::TollgateFields;
    use crate::gateway::restored::REQUEST_PREFIX;
    use crate::ledger::reservation::LOCAL_BIT;

    fn record(request_id: String, reservation: u64, charged: u64) -> InvocationRecord {
        let restored = request_id.starts_with(REQUEST_PREFIX);
        InvocationRecord {
            schema_type: String::new(),
            schema_version: String::new(),
            timestamp: String::new(),
            request_id: request_id.clone(),
            operation: String::new(),
            model_id: String::new(),
            input: Default::default(),
            output: Default::default(),
            request_metadata: Default::default(),
            tollgate: TollgateFields {
                request_id,
                tenant: "acme".into(),
                reserved_nano_usd: 50,
                reservation: Some(reservation),
                cost_nano_usd: charged,
                charged_from: if restored { "reservation" } else { "released" }.into(),
                ..TollgateFields::default()
            },
        }
    }

    #[test]
    fn a_restored_charge_is_superseded_only_by_its_own_calls_record() {
        let restored = |id: u64| record(format!("{REQUEST_PREFIX}{id}"), id, 50);
        let local = LOCAL_BIT | 1;
        let records = [
            // Adopted, then amended by the call's own outcome: only the call counts.
            restored(7),
            record("call-7".into(), 7, 0),
            // Adopted, and no record of the call: the charge stands.
            restored(8),
            // An allowance id, unique within one process only: joins nothing.
            restored(local),
            record("call-local".into(), local, 0),
        ];
        let rec = reconcile(&Catalog::embedded(), &records);
        assert_eq!(rec.superseded, 1);
        assert!(rec.is_exact(), "{:?}", rec.mismatches);
        assert_eq!(rec.tenants["acme"].logged, 100);
        assert_eq!(rec.tenants["acme"].charged_calls, 2);
    }
}

//! Reconciliation: every charge in an invocation log recomputed from the
//! record alone, and per-tenant totals to hold against the ledger.
//!
//! A record charged from usage is repriced from its `billing` (the region,
//! tier, latency mode and every token count) with the price book given; a
//! record charged its hold must show the hold; a released one, nothing.

use std::collections::BTreeMap;

use super::invocation_log::InvocationRecord;
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

/// Reprices every record of a log.
pub fn reconcile(catalog: &Catalog, records: &[InvocationRecord]) -> Reconciliation {
    let mut out = Reconciliation {
        records: records.len(),
        ..Reconciliation::default()
    };
    let mut regional = RegionalCatalogs::new(catalog.clone());
    for record in records {
        let t = &record.tollgate;
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

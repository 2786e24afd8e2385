//! A replay's findings for a terminal, or as one JSON document.

use std::fmt::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use serde::Serialize;
use tollgate_host::NanoUsd;

use super::tally::{Tally, TenantTally, VerdictCounts};

/// How the run went, beside what it found.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub policy: String,
    pub files: Vec<String>,
    pub elapsed_ms: u64,
    pub records_per_second: u64,
}

#[derive(Serialize)]
struct Document<'a> {
    run: &'a RunInfo,
    #[serde(flatten)]
    tally: &'a Tally,
}

pub fn json(run: &RunInfo, tally: &Tally) -> String {
    serde_json::to_string_pretty(&Document { run, tally }).unwrap_or_default()
}

pub fn text(run: &RunInfo, tally: &Tally) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "tollgate replay of {} over {} record(s) in {} file(s): {:.1} s, {} records/s",
        run.policy,
        tally.records,
        run.files.len(),
        run.elapsed_ms as f64 / 1000.0,
        run.records_per_second
    );
    let s = &tally.skipped;
    let unknown: u64 = s.unknown_tenants.values().sum();
    let _ = writeln!(
        out,
        "replayed {} call(s); skipped {} that no policy decided, {} of tenants not in the configuration, {} not \
         selected, {} unreplayable",
        tally.total.calls, s.before_policy, unknown, s.not_selected, s.unreplayable
    );
    if let Some(why) = &s.first_unreplayable {
        let _ = writeln!(out, "  first unreplayable: {why}");
    }
    out.push('\n');

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "tenant",
        "calls",
        "recorded a/d/t/r",
        "candidate a/d/t/r",
        "recorded spend",
        "candidate spend",
        "saved",
        "changed",
    ]);
    for (name, tenant) in &tally.tenants {
        table.add_row(row(name, tenant));
    }
    if tally.tenants.len() > 1 {
        table.add_row(row("total", &tally.total));
    }
    for column in [1, 4, 5, 6, 7] {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let _ = writeln!(out, "{table}");
    let estimated = tally.total.estimated_spend_nano_usd;
    if estimated > 0 {
        let _ = writeln!(
            out,
            "{} of the candidate's spend is the worst case of calls refused live, which the log has no usage for",
            NanoUsd(estimated)
        );
    }

    if tally.differences.is_empty() {
        let _ = writeln!(out, "\nno call changes");
        return out;
    }
    let _ = writeln!(
        out,
        "\nfirst {} of {} changed call(s):",
        tally.differences.len(),
        tally.changed_calls()
    );
    for d in &tally.differences {
        let _ = writeln!(
            out,
            "  {} {} {}\n    recorded  {:<9} {} {}\n    candidate {:<9} {} {}{}\n    because   {}",
            timestamp(d.at_ms),
            d.tenant,
            d.request_id,
            d.recorded.verdict,
            d.recorded.model,
            NanoUsd(d.recorded.cost_nano_usd),
            d.candidate.verdict,
            d.candidate.model,
            NanoUsd(d.candidate.cost_nano_usd),
            if d.estimated { " (worst case)" } else { "" },
            d.reason
        );
    }
    out
}

fn row(name: &str, t: &TenantTally) -> Vec<String> {
    vec![
        name.to_owned(),
        t.calls.to_string(),
        counts(&t.recorded),
        counts(&t.candidate),
        NanoUsd(t.recorded_spend_nano_usd).to_string(),
        NanoUsd(t.candidate_spend_nano_usd).to_string(),
        signed(t.saved_nano_usd),
        t.changed_calls.to_string(),
    ]
}

fn counts(c: &VerdictCounts) -> String {
    format!("{}/{}/{}/{}", c.admit, c.downgrade, c.throttle, c.reject)
}

/// Saved money, with a minus sign when the candidate spends more.
fn signed(nano: i64) -> String {
    let amount = NanoUsd(nano.unsigned_abs());
    if nano < 0 {
        format!("-{amount}")
    } else {
        amount.to_string()
    }
}

fn timestamp(ms: u64) -> String {
    tollgate_host::gateway::invocation_log::timestamp(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_lost_shows_its_sign() {
        assert_eq!(signed(-1_500_000_000), "-$1.50");
        assert_eq!(signed(20), "$0.00000002");
    }
}

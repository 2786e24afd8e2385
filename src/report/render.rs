//! The report on stdout: a table for people, CSV or JSON for pipelines.
//!
//! Money is exact in CSV and JSON (dollars with all nine decimals, and the
//! integer nano-dollars in JSON) and rounded to what a reader needs in the
//! table.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::group::{Dimension, Groups, Totals, parts};
use super::problems::Problems;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// A tenant's budget, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub nano: u64,
    pub period: &'static str,
}

/// What the report was made of, shown beside the figures.
pub struct Context<'a> {
    pub groups: &'a Groups,
    pub budgets: Option<&'a BTreeMap<String, Budget>>,
    pub problems: &'a Problems,
    pub files: usize,
    /// Records in the window and of the tenants asked for.
    pub counted: u64,
    /// Records read but left out by --since, --until or --tenant.
    pub filtered_out: u64,
    /// Restored charges left out: their calls' own records replaced them.
    pub superseded: u64,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Context<'_> {
    /// The budget of the row's tenant, when grouped by tenant.
    fn budget(&self, key: &str) -> Option<Budget> {
        let at = self.groups.dims().iter().position(|d| *d == Dimension::Tenant)?;
        self.budgets?.get(parts(key).nth(at)?).copied()
    }

    fn by_tenant(&self) -> bool {
        self.groups.dims().contains(&Dimension::Tenant)
    }
}

pub fn render(format: OutputFormat, cx: &Context, out: &mut dyn Write) -> Result<()> {
    match format {
        OutputFormat::Table => table(cx, out),
        OutputFormat::Csv => csv(cx, out),
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &document(cx))?;
            writeln!(out)?;
            Ok(())
        }
    }
}

/// Whether writing failed because the reader of stdout went away.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == BrokenPipe)
            || e.downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(BrokenPipe))
            || e.downcast_ref::<csv::Error>()
                .is_some_and(|e| matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == BrokenPipe))
    })
}

fn table(cx: &Context, out: &mut dyn Write) -> Result<()> {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header: Vec<&str> = cx.groups.dims().iter().map(|d| d.name()).collect();
    header.extend([
        "calls",
        "downgraded",
        "throttled",
        "rejected",
        "spend",
        "saved by downgrades",
    ]);
    if cx.by_tenant() {
        header.extend(["budget", "of budget"]);
    }
    table.set_header(header);
    let rows = cx.groups.rows();
    for (key, totals) in &rows {
        let mut cells: Vec<String> = parts(key)
            .map(|k| if k.is_empty() { "-".into() } else { k.to_owned() })
            .collect();
        cells.extend(figures(totals));
        if cx.by_tenant() {
            match cx.budget(key) {
                Some(b) => cells.extend([
                    format!("{} {}", usd_rounded(b.nano), b.period),
                    percent(totals.spend, b.nano),
                ]),
                None => cells.extend([String::new(), String::new()]),
            }
        }
        table.add_row(cells);
    }
    if rows.len() > 1 {
        let mut cells = vec!["total".to_owned()];
        cells.extend((1..cx.groups.dims().len()).map(|_| String::new()));
        cells.extend(figures(&cx.groups.total));
        table.add_row(cells);
    }
    for column in table.column_iter_mut().skip(cx.groups.dims().len()) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    writeln!(out, "{}", headline(cx))?;
    writeln!(out, "{table}")?;
    Ok(())
}

fn figures(t: &Totals) -> [String; 6] {
    let share = |n: u64| format!("{:.1}%", t.percent(n));
    [
        t.calls.to_string(),
        share(t.downgraded),
        share(t.throttled),
        share(t.rejected),
        usd_rounded(t.spend),
        usd_rounded_signed(t.savings),
    ]
}

fn headline(cx: &Context) -> String {
    let window = match (&cx.since, &cx.until) {
        (None, None) => String::new(),
        (since, until) => format!(
            ", from {} up to {}",
            since.as_deref().unwrap_or("the first record"),
            until.as_deref().unwrap_or("the last")
        ),
    };
    let left_out = if cx.filtered_out > 0 {
        format!(" ({} more left out by the filters)", cx.filtered_out)
    } else {
        String::new()
    };
    let superseded = if cx.superseded > 0 {
        format!(
            "; {} restored charges left out, replaced by their calls' own records",
            cx.superseded
        )
    } else {
        String::new()
    };
    format!(
        "{} calls from {} file{}{window}{left_out}{superseded}",
        cx.counted,
        cx.files,
        if cx.files == 1 { "" } else { "s" }
    )
}

/// The CSV columns after the grouping's.
const CSV_FIGURES: [&str; 17] = [
    "calls",
    "admitted",
    "downgraded",
    "throttled",
    "rejected",
    "other",
    "downgraded_percent",
    "throttled_percent",
    "rejected_percent",
    "spend_usd",
    "savings_usd",
    "savings_unknown_calls",
    "unpriced_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
];

fn csv(cx: &Context, out: &mut dyn Write) -> Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    let mut header: Vec<String> = cx.groups.dims().iter().map(|d| d.name().replace('-', "_")).collect();
    header.extend(CSV_FIGURES.iter().map(|s| (*s).to_owned()));
    if cx.by_tenant() {
        header.extend(["budget_usd", "budget_period", "budget_used_percent"].map(str::to_owned));
    }
    writer.write_record(&header)?;
    for (key, t) in cx.groups.rows() {
        let mut record: Vec<String> = parts(key).map(str::to_owned).collect();
        record.extend([
            t.calls.to_string(),
            t.admitted.to_string(),
            t.downgraded.to_string(),
            t.throttled.to_string(),
            t.rejected.to_string(),
            t.other.to_string(),
            format!("{:.2}", t.percent(t.downgraded)),
            format!("{:.2}", t.percent(t.throttled)),
            format!("{:.2}", t.percent(t.rejected)),
            usd_exact(t.spend),
            usd_exact_signed(t.savings),
            t.savings_unknown.to_string(),
            t.unpriced_calls.to_string(),
            t.tokens.input.to_string(),
            t.tokens.output.to_string(),
            t.tokens.cache_read.to_string(),
            t.tokens.cache_write.to_string(),
        ]);
        if cx.by_tenant() {
            match cx.budget(key) {
                Some(b) => record.extend([
                    usd_exact(b.nano),
                    b.period.to_owned(),
                    format!("{:.2}", ratio(t.spend, b.nano)),
                ]),
                None => record.extend([String::new(), String::new(), String::new()]),
            }
        }
        writer.write_record(&record)?;
    }
    writer.flush()?;
    Ok(())
}

/// The JSON report, written group by group as it is serialised: a report of
/// half a million groups never exists as one tree of values.
#[derive(Serialize)]
struct Document<'a> {
    group_by: Vec<&'static str>,
    since: Option<&'a str>,
    until: Option<&'a str>,
    files: usize,
    calls: u64,
    filtered_out: u64,
    superseded_restored: u64,
    groups: GroupsJson<'a>,
    total: TotalsJson<'a>,
    problems: &'a Problems,
}

fn document<'a>(cx: &'a Context<'a>) -> Document<'a> {
    Document {
        group_by: cx.groups.dims().iter().map(|d| d.name()).collect(),
        since: cx.since.as_deref(),
        until: cx.until.as_deref(),
        files: cx.files,
        calls: cx.counted,
        filtered_out: cx.filtered_out,
        superseded_restored: cx.superseded,
        groups: GroupsJson {
            cx,
            rows: cx.groups.rows(),
        },
        total: TotalsJson(&cx.groups.total),
        problems: cx.problems,
    }
}

struct GroupsJson<'a> {
    cx: &'a Context<'a>,
    rows: Vec<(&'a str, &'a Totals)>,
}

impl Serialize for GroupsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows.len()))?;
        for (key, totals) in &self.rows {
            seq.serialize_element(&RowJson {
                cx: self.cx,
                key,
                totals,
            })?;
        }
        seq.end()
    }
}

/// One group: its value of each dimension (`null` when the records did not
/// say), its figures, and its tenant's budget when grouped by tenant.
struct RowJson<'a> {
    cx: &'a Context<'a>,
    key: &'a str,
    totals: &'a Totals,
}

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (dim, value) in self.cx.groups.dims().iter().zip(parts(self.key)) {
            let name = match dim {
                Dimension::UseCase => "use_case",
                other => other.name(),
            };
            map.serialize_entry(name, &Some(value).filter(|v| !v.is_empty()))?;
        }
        totals_entries(&mut map, self.totals)?;
        if self.cx.by_tenant() {
            let budget = self.cx.budget(self.key);
            map.serialize_entry("budget_usd", &budget.map(|b| usd_exact(b.nano)))?;
            map.serialize_entry("budget_nano_usd", &budget.map(|b| b.nano))?;
            map.serialize_entry("budget_period", &budget.map(|b| b.period))?;
            map.serialize_entry(
                "budget_used_percent",
                &budget.map(|b| round2(ratio(self.totals.spend, b.nano))),
            )?;
        }
        map.end()
    }
}

struct TotalsJson<'a>(&'a Totals);

impl Serialize for TotalsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        totals_entries(&mut map, self.0)?;
        map.end()
    }
}

fn totals_entries<M: SerializeMap>(map: &mut M, t: &Totals) -> Result<(), M::Error> {
    map.serialize_entry("calls", &t.calls)?;
    map.serialize_entry("admitted", &t.admitted)?;
    map.serialize_entry("downgraded", &t.downgraded)?;
    map.serialize_entry("throttled", &t.throttled)?;
    map.serialize_entry("rejected", &t.rejected)?;
    map.serialize_entry("other", &t.other)?;
    map.serialize_entry("downgraded_percent", &round2(t.percent(t.downgraded)))?;
    map.serialize_entry("throttled_percent", &round2(t.percent(t.throttled)))?;
    map.serialize_entry("rejected_percent", &round2(t.percent(t.rejected)))?;
    map.serialize_entry("spend_usd", &usd_exact(t.spend))?;
    map.serialize_entry("spend_nano_usd", &t.spend)?;
    map.serialize_entry("savings_usd", &usd_exact_signed(t.savings))?;
    map.serialize_entry("savings_nano_usd", &t.savings)?;
    map.serialize_entry("savings_unknown_calls", &t.savings_unknown)?;
    map.serialize_entry("unpriced_calls", &t.unpriced_calls)?;
    map.serialize_entry("input_tokens", &t.tokens.input)?;
    map.serialize_entry("output_tokens", &t.tokens.output)?;
    map.serialize_entry("cache_read_tokens", &t.tokens.cache_read)?;
    map.serialize_entry("cache_write_tokens", &t.tokens.cache_write)?;
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.1}%", ratio(part, whole))
}

const PER_USD: u64 = tollgate_host::NanoUsd::PER_USD;

/// `12.345678901`: every nano-dollar.
pub fn usd_exact(nano: u64) -> String {
    format!("{}.{:09}", nano / PER_USD, nano % PER_USD)
}

fn usd_exact_signed(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    format!("{sign}{}", usd_exact(nano.unsigned_abs()))
}

/// To the cent from half a cent up; below that, to two significant digits.
pub fn usd_rounded(nano: u64) -> String {
    if nano == 0 {
        return "$0.00".into();
    }
    let cents = (nano + 5_000_000) / 10_000_000;
    if cents > 0 {
        let dollars = group_thousands(cents / 100);
        return format!("${dollars}.{:02}", cents % 100);
    }
    // Under half a cent, cents would show nothing: two significant digits.
    let first_digit = 9 - nano.ilog10(); // the decimal place of the first non-zero digit
    let decimals = first_digit + 1;
    if decimals >= 9 {
        return format!("$0.{nano:09}");
    }
    let unit = 10u64.pow(9 - decimals);
    let rounded = (nano + unit / 2) / unit;
    format!("$0.{rounded:0width$}", width = decimals as usize)
}

fn usd_rounded_signed(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    format!("{sign}{}", usd_rounded(nano.unsigned_abs()))
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_for_machines_and_rounded_for_people() {
        assert_eq!(usd_exact(3_355_000), "0.003355000");
        assert_eq!(usd_exact(12_000_000_001), "12.000000001");
        assert_eq!(usd_exact_signed(-1), "-0.000000001");
        assert_eq!(usd_rounded(1_234_567_890_123), "$1,234.57");
        assert_eq!(usd_rounded(10_000_000), "$0.01");
        assert_eq!(usd_rounded(3_355_000), "$0.0034");
        assert_eq!(usd_rounded(149_800), "$0.00015");
        assert_eq!(usd_rounded(1_300), "$0.0000013");
        assert_eq!(usd_rounded(27), "$0.000000027");
        assert_eq!(usd_rounded(1), "$0.000000001");
        assert_eq!(usd_rounded(0), "$0.00");
        assert_eq!(usd_rounded_signed(-25_000_000), "-$0.03");
    }
}

//! Table-driven policy tests: a TOML cases file of request + state →
//! expected verdict, run through the real host.
//!
//! Keys are the WIT field names (kebab-case). A case only states what differs
//! from the defaults: built-in defaults, then the file's `[defaults]`, then
//! the case itself, merged table by table. A misspelt key is an error that
//! names the case and the full key path, never a silently ignored field.
//!
//! ```toml
//! [config]                       # policy parameters, given to the policy as JSON
//! downgrade-at-percent = 80
//!
//! [defaults.state.budget]
//! limit = 100_000_000_000        # $100
//!
//! [[case]]
//! name = "downgrades at 85%"
//! state.budget.spent = 85_000_000_000
//! expect = { action = "downgrade", model = "amazon.nova-micro-v1:0" }
//! ```

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};

use chrono_tz::Tz;

use crate::contract::local_time::period_days;
use crate::contract::{Action, LocalTime, RejectKind, Request, TenantState};
use crate::engine::failure::FailureKind;
use crate::engine::instances::MAX_INSTANCE_USES;
use crate::ids::ModelId;
use crate::registry::decision::Decision;
use crate::registry::version::PolicyVersion;

/// Defaults under every case: a plausible request against a $100 monthly
/// budget in January 2026.
const BUILTIN_DEFAULTS: &str = r#"
[request]
tenant-id = "tenant"
operation = "converse"
model-id = "anthropic.claude-3-5-haiku-20241022-v1:0"
estimated-input-tokens = 1000
max-output-tokens = 1000
now-ms = 1767225600000

[state.plan]
tier = "pro"

[state.budget]
limit = 100_000_000_000
period = "monthly"
period-start-ms = 1767225600000
period-end-ms = 1769904000000
"#;

/// A parsed cases file.
#[derive(Debug, Clone)]
pub struct CasesFile {
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub request: Request,
    pub state: TenantState,
    /// The policy parameters (JSON) this case pins; `None` uses the
    /// version's own config.
    pub config: Option<String>,
    /// The downgrade chain this case pins; `None` uses the version's own.
    pub downgrade_chain: Option<Vec<String>>,
    /// The case sets `request.requested` or `request.downgrade-chain`
    /// itself, so the runner prices nothing.
    pub priced_by_case: bool,
    pub expect: Expectation,
}

/// What a case expects of the decision. Unset fields are not checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Expectation {
    pub action: ExpectedAction,
    /// Downgrade target.
    pub model: Option<String>,
    /// Throttle delay.
    pub retry_after_ms: Option<u64>,
    /// Rejection kind.
    pub reject: Option<RejectKind>,
    /// A substring of the reason.
    pub reason_contains: Option<String>,
    /// The verdict's output token cap.
    pub max_output_tokens: Option<u64>,
    /// Pairs that must be among the verdict's metadata.
    #[serde(default)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedAction {
    Admit,
    Downgrade,
    Throttle,
    Reject,
}

/// A cases file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("cannot read cases file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {location}: {message}")]
    Case {
        origin: String,
        location: String,
        message: String,
    },
}

impl CasesFile {
    pub fn load(path: &Path) -> Result<Self, CasesError> {
        let text = std::fs::read_to_string(path).map_err(|source| CasesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses a cases file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CasesError> {
        let syntax = |message: String| CasesError::Syntax {
            origin: origin.to_owned(),
            message,
        };
        let mut file: Table = text.parse().map_err(|e: toml::de::Error| syntax(e.to_string()))?;
        for key in file.keys() {
            if !matches!(key.as_str(), "config" | "downgrade-chain" | "defaults" | "case") {
                return Err(syntax(format!(
                    "unknown top-level key `{key}`; expected `config`, `downgrade-chain`, `defaults` or `[[case]]`"
                )));
            }
        }
        let file_config = match file.remove("config") {
            Some(Value::Table(t)) => Some(to_json(&t)),
            Some(_) => return Err(syntax("`config` must be a table of policy parameters".into())),
            None => None,
        };
        let file_chain = match file.remove("downgrade-chain") {
            Some(value) => Some(model_list(value).map_err(syntax)?),
            None => None,
        };
        let mut defaults: Table = BUILTIN_DEFAULTS
            .parse()
            .map_err(|e: toml::de::Error| syntax(e.to_string()))?;
        match file.remove("defaults") {
            Some(Value::Table(t)) => {
                for key in t.keys() {
                    if !matches!(key.as_str(), "request" | "state") {
                        return Err(syntax(format!(
                            "unknown key `defaults.{key}`; expected `defaults.request` or `defaults.state`"
                        )));
                    }
                }
                merge(&mut defaults, t);
            }
            Some(_) => return Err(syntax("`defaults` must be a table".into())),
            None => {}
        }
        let raw_cases = match file.remove("case") {
            Some(Value::Array(cases)) => cases,
            Some(_) => {
                return Err(syntax(
                    "`case` must be an array of tables: write each as `[[case]]`".into(),
                ));
            }
            None => return Err(syntax("no cases: add at least one `[[case]]`".into())),
        };
        let mut cases = Vec::with_capacity(raw_cases.len());
        for (index, raw) in raw_cases.into_iter().enumerate() {
            let file_level = FileLevel {
                defaults: &defaults,
                config: file_config.as_deref(),
                chain: file_chain.as_deref(),
            };
            cases.push(parse_case(index, raw, &file_level, origin)?);
        }
        Ok(CasesFile { cases })
    }
}

/// What a cases file sets for all of its cases.
struct FileLevel<'a> {
    defaults: &'a Table,
    config: Option<&'a str>,
    chain: Option<&'a [String]>,
}

fn model_list(value: Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = value else {
        return Err("`downgrade-chain` must be a list of model ids".into());
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(model) => Ok(model),
            other => Err(format!(
                "`downgrade-chain` lists {other}, which is not a model id string"
            )),
        })
        .collect()
}

fn parse_case(index: usize, raw: Value, file: &FileLevel<'_>, origin: &str) -> Result<Case, CasesError> {
    let Value::Table(mut raw) = raw else {
        return Err(CasesError::Syntax {
            origin: origin.to_owned(),
            message: format!("case #{} is not a table", index + 1),
        });
    };
    let name = match raw.remove("name") {
        Some(Value::String(name)) => name,
        _ => format!("#{}", index + 1),
    };
    let fail = |message: String| CasesError::Case {
        origin: origin.to_owned(),
        location: format!("case #{} {name:?}", index + 1),
        message,
    };
    for key in raw.keys() {
        if !matches!(
            key.as_str(),
            "request" | "state" | "config" | "downgrade-chain" | "expect"
        ) {
            return Err(fail(format!(
                "unknown key `{key}`; a case has `name`, `request`, `state`, `config`, `downgrade-chain` and `expect`"
            )));
        }
    }
    let mut merged = file.defaults.clone();
    let expect = raw.remove("expect").ok_or_else(|| fail("missing `expect`".into()))?;
    let config = match raw.remove("config") {
        Some(Value::Table(t)) => Some(to_json(&t)),
        Some(_) => return Err(fail("`config` must be a table".into())),
        None => file.config.map(str::to_owned),
    };
    let downgrade_chain = match raw.remove("downgrade-chain") {
        Some(value) => Some(model_list(value).map_err(&fail)?),
        None => file.chain.map(<[String]>::to_vec),
    };
    merge(&mut merged, raw);

    let request_table = merged.remove("request").unwrap_or_else(|| Value::Table(Table::new()));
    // Options the case gives itself are kept; otherwise they are priced.
    let priced_by_case = ["requested", "downgrade-chain"]
        .iter()
        .any(|key| request_table.get(key).is_some());
    let mut request: Request = from_value(request_table, "request").map_err(&fail)?;
    if request.base_model_id.is_empty() {
        request.base_model_id = ModelId::new(&request.model_id).without_region_prefix().to_owned();
    }
    if request.request_id.is_empty() {
        request.request_id = format!("case-{}", index + 1);
    }
    request.config = config.clone().unwrap_or_default();
    let state_table = merged.remove("state").unwrap_or_else(|| Value::Table(Table::new()));
    let zone = case_zone(&state_table).map_err(&fail)?;
    let mut state: TenantState = from_value(state_table, "state").map_err(&fail)?;
    // The host computes these in the gateway; so does the runner.
    state.clock = LocalTime::at(zone, request.now_ms);
    let budget = &mut state.budget;
    (budget.days_elapsed, budget.days_remaining) =
        period_days(zone, budget.period_start_ms, budget.period_end_ms, request.now_ms);
    let expect: Expectation = from_value(expect, "expect").map_err(&fail)?;
    Ok(Case {
        name,
        request,
        state,
        config,
        downgrade_chain: if priced_by_case { None } else { downgrade_chain },
        priced_by_case,
        expect,
    })
}

/// `state.clock.time-zone` (UTC when unset). The rest of the clock is the
/// host's to compute, so a case may not set it.
fn case_zone(state: &Value) -> Result<Tz, String> {
    let Some(clock) = state.get("clock") else {
        return Ok(Tz::UTC);
    };
    let Value::Table(clock) = clock else {
        return Err("state.clock must be a table with `time-zone`".into());
    };
    if let Some(key) = clock.keys().find(|k| *k != "time-zone") {
        return Err(format!(
            "state.clock.{key} is computed by the host from state.clock.time-zone and request.now-ms; set those instead"
        ));
    }
    match clock.get("time-zone") {
        None => Ok(Tz::UTC),
        Some(Value::String(name)) => name
            .parse()
            .map_err(|_| format!("state.clock.time-zone {name:?} is not an IANA time zone such as \"Europe/Berlin\"")),
        Some(other) => Err(format!("state.clock.time-zone must be a string, not {other}")),
    }
}

/// Deserializes with the full key path in the error ("state.budget.spnt").
fn from_value<T: serde::de::DeserializeOwned>(value: Value, root: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let at = if path == "." {
            root.to_owned()
        } else {
            format!("{root}.{path}")
        };
        format!("{at}: {}", err.inner())
    })
}

/// Deep-merges `over` into `base`; `over` wins.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn to_json(table: &Table) -> String {
    // A TOML table is always representable as JSON.
    serde_json::to_string(table).unwrap_or_default()
}

/// One field where a decision differed from the expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub actual: String,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub decision: Decision,
    pub mismatches: Vec<Mismatch>,
}

impl CaseOutcome {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

impl fmt::Display for CaseOutcome {
    /// `ok   name` or `FAIL name` followed by a `-expected / +actual` diff.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            return write!(
                f,
                "ok   {} → {} ({:?})",
                self.name,
                describe(&self.decision.action),
                self.decision.elapsed
            );
        }
        write!(f, "FAIL {}", self.name)?;
        for m in &self.mismatches {
            write!(
                f,
                "\n       - {}: {}\n       + {}: {}",
                m.field, m.expected, m.field, m.actual
            )?;
        }
        write!(f, "\n       reason: {}", self.decision.reason)?;
        // The guest's own output (a traceback, a stack), one line per line
        // here: the author reads it at a terminal, not in a log.
        if let Some((_, wrote)) = self
            .decision
            .failure
            .as_ref()
            .and_then(|failure| failure.detail.split_once(crate::engine::failure::GUEST_OUTPUT))
        {
            write!(f, "\n       the policy wrote:")?;
            for line in wrote.split("\\n") {
                write!(f, "\n         {line}")?;
            }
        }
        Ok(())
    }
}

/// Runs every case against a version and reports each outcome.
/// Runs every case twice: each on a fresh instance, compared with its
/// expectation; then all of them, round after round, on one reused
/// instance for as many calls as a pooled instance serves
/// ([`MAX_INSTANCE_USES`]). A verdict that differs on the reused instance
/// means the policy keeps state between calls, and fails that case.
pub fn run(version: &PolicyVersion, cases: &CasesFile) -> Vec<CaseOutcome> {
    let requests: Vec<Request> = cases
        .cases
        .iter()
        .map(|case| {
            let mut request = case.request.clone();
            if case.config.is_none() {
                version.bind(&mut request);
            }
            if !case.priced_by_case {
                let chain = case
                    .downgrade_chain
                    .as_deref()
                    .unwrap_or(&version.settings().downgrade_chain);
                version.price_options(&mut request, chain);
            }
            request
        })
        .collect();
    let mut outcomes: Vec<CaseOutcome> = cases
        .cases
        .iter()
        .zip(&requests)
        .map(|(case, request)| {
            let decision = version.decide_case(request, &case.state, None);
            let mismatches = compare(&case.expect, &decision);
            CaseOutcome {
                name: case.name.clone(),
                decision,
                mismatches,
            }
        })
        .collect();
    if cases.cases.is_empty() {
        return outcomes;
    }
    let mut session = version.session();
    for call in 0..MAX_INSTANCE_USES as usize {
        let i = call % cases.cases.len();
        let uses = session.uses();
        let again = version.decide_case(&requests[i], &cases.cases[i].state, Some(&mut session));
        if !same_verdict(&outcomes[i].decision, &again) {
            let expected = format!("{} (as on a fresh instance)", verdict_text(&outcomes[i].decision));
            outcomes[i].mismatches.push(Mismatch {
                field: "reused instance",
                expected,
                actual: format!(
                    "{} after {uses} earlier calls on the same instance: the policy keeps state between calls; \
                     a verdict must depend only on the request and the tenant state",
                    verdict_text(&again)
                ),
            });
            break;
        }
    }
    outcomes
}

/// Whether two decisions of the same case agree. Timeouts and capacity
/// failures depend on the machine, not the policy, so they are not compared.
fn same_verdict(a: &Decision, b: &Decision) -> bool {
    let timing = |d: &Decision| {
        d.failure
            .as_ref()
            .is_some_and(|f| matches!(f.kind, FailureKind::Timeout | FailureKind::Capacity))
    };
    if timing(a) || timing(b) {
        return true;
    }
    a.action == b.action
        && a.reason == b.reason
        && a.metadata == b.metadata
        && a.max_output_tokens == b.max_output_tokens
        && a.failure.as_ref().map(|f| f.kind) == b.failure.as_ref().map(|f| f.kind)
}

fn verdict_text(d: &Decision) -> String {
    format!("{}: {}", describe(&d.action), crate::text::clip(&d.reason, 200))
}

fn compare(expect: &Expectation, decision: &Decision) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, expected: String, actual: String| {
        if expected != actual {
            out.push(Mismatch {
                field,
                expected,
                actual,
            });
        }
    };
    let actual_action = match decision.action {
        Action::Admit => ExpectedAction::Admit,
        Action::Downgrade(_) => ExpectedAction::Downgrade,
        Action::Throttle(_) => ExpectedAction::Throttle,
        Action::Reject(_) => ExpectedAction::Reject,
    };
    if actual_action != expect.action {
        let expected = format!("{:?}", expect.action).to_lowercase();
        check("action", expected, describe(&decision.action));
        return out;
    }
    match (&decision.action, expect) {
        (
            Action::Downgrade(model),
            Expectation {
                model: Some(expected), ..
            },
        ) => check("model", expected.clone(), model.clone()),
        (
            Action::Throttle(ms),
            Expectation {
                retry_after_ms: Some(expected),
                ..
            },
        ) => check("retry-after-ms", expected.to_string(), ms.to_string()),
        (
            Action::Reject(kind),
            Expectation {
                reject: Some(expected), ..
            },
        ) => check("reject", expected.as_str().into(), kind.as_str().into()),
        _ => {}
    }
    if let Some(needle) = &expect.reason_contains
        && !decision.reason.contains(needle.as_str())
    {
        check(
            "reason",
            format!("contains {needle:?}"),
            format!("{:?}", decision.reason),
        );
    }
    if let Some(cap) = expect.max_output_tokens {
        check(
            "max-output-tokens",
            cap.to_string(),
            decision.max_output_tokens.map_or("none".into(), |c| c.to_string()),
        );
    }
    for pair in &expect.metadata {
        if !decision.metadata.contains(pair) {
            check(
                "metadata",
                format!("contains {}={}", pair.0, pair.1),
                format!("{:?}", decision.metadata),
            );
        }
    }
    out
}

/// `admit`, `downgrade → model`, `throttle 1500 ms`, `reject (budget-exhausted)`.
pub fn describe(action: &Action) -> String {
    match action {
        Action::Admit => "admit".into(),
        Action::Downgrade(model) => format!("downgrade → {model}"),
        Action::Throttle(ms) => format!("throttle {ms} ms"),
        Action::Reject(kind) => format!("reject ({})", kind.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[config]
downgrade-at-percent = 80

[defaults.request]
model-id = "us.anthropic.claude-sonnet-4-20250514-v1:0"

[[case]]
name = "admits"
state.budget.spent = 10
expect = { action = "admit" }

[[case]]
name = "downgrades"
config = { downgrade-at-percent = 50 }
[case.request]
worst-case-cost = 5
[case.state.budget]
spent = 90
[case.expect]
action = "downgrade"
model = "amazon.nova-micro-v1:0"
"#;

    #[test]
    fn merges_defaults_and_cases() {
        let file = CasesFile::parse(FILE, "test.toml").expect("parses");
        assert_eq!(file.cases.len(), 2);
        let first = &file.cases[0];
        assert_eq!(first.name, "admits");
        assert_eq!(first.request.model_id, "us.anthropic.claude-sonnet-4-20250514-v1:0");
        assert_eq!(first.request.base_model_id, "anthropic.claude-sonnet-4-20250514-v1:0");
        assert_eq!(first.request.estimated_input_tokens, 1000);
        assert_eq!(first.state.budget.spent, 10);
        assert_eq!(first.state.budget.limit, 100_000_000_000);
        assert_eq!(first.config.as_deref(), Some(r#"{"downgrade-at-percent":80}"#));
        let second = &file.cases[1];
        assert_eq!(second.config.as_deref(), Some(r#"{"downgrade-at-percent":50}"#));
        assert_eq!(second.request.worst_case_cost, 5);
        assert_eq!(second.expect.model.as_deref(), Some("amazon.nova-micro-v1:0"));
    }

    #[test]
    fn a_typo_names_the_case_and_key_path() {
        let text = FILE.replace("[case.state.budget]\nspent", "[case.state.budget]\nspnt");
        let err = CasesFile::parse(&text, "test.toml").unwrap_err().to_string();
        assert!(err.contains("case #2 \"downgrades\""), "{err}");
        assert!(err.contains("state.budget.spnt"), "{err}");
        assert!(err.contains("unknown field `spnt`"), "{err}");
    }

    #[test]
    fn syntax_errors_and_wrong_values_are_explained() {
        let err = CasesFile::parse("[[case]\nname=", "bad.toml").unwrap_err().to_string();
        assert!(err.starts_with("bad.toml:"), "{err}");
        let err = CasesFile::parse(&FILE.replace("action = \"admit\"", "action = \"allow\""), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expect.action") && err.contains("allow"), "{err}");
        let err = CasesFile::parse("[defaults.requests]\n[[case]]\nexpect={action=\"admit\"}", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("defaults.requests"), "{err}");
    }

    #[test]
    fn the_clock_and_period_days_are_computed_from_the_zone_and_now() {
        let text = r#"
downgrade-chain = ["amazon.nova-micro-v1:0"]

[defaults.state.clock]
time-zone = "America/New_York"

[[case]]
name = "monday after the change"
# 2026-03-09T13:30:00Z: 09:30 EDT.
request.now-ms = 1773063000000
state.budget = { period-start-ms = 1772341200000, period-end-ms = 1775016000000 }
expect = { action = "admit" }

[[case]]
name = "another zone, own chain"
downgrade-chain = []
state.clock = { time-zone = "Europe/Berlin" }
expect = { action = "admit" }
"#;
        let file = CasesFile::parse(text, "t.toml").expect("parses");
        let first = &file.cases[0];
        let clock = &first.state.clock;
        assert_eq!((clock.hour, clock.minute, clock.utc_offset_minutes), (9, 30, -240));
        assert_eq!(clock.weekday, crate::contract::Weekday::Monday);
        assert_eq!(clock.time_zone, "America/New_York");
        assert_eq!(
            (first.state.budget.days_elapsed, first.state.budget.days_remaining),
            (8, 23)
        );
        assert_eq!(
            first.downgrade_chain.as_deref(),
            Some(&["amazon.nova-micro-v1:0".to_owned()][..])
        );
        let second = &file.cases[1];
        assert_eq!(second.state.clock.time_zone, "Europe/Berlin");
        assert_eq!(second.downgrade_chain.as_deref(), Some(&[][..]));
    }

    #[test]
    fn a_case_may_not_set_what_the_host_computes() {
        let case = |clock: &str| format!("[[case]]\nstate.clock = {clock}\nexpect = {{ action = \"admit\" }}\n");
        let err = CasesFile::parse(&case("{ hour = 9 }"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("state.clock.hour is computed by the host"), "{err}");
        let err = CasesFile::parse(&case("{ time-zone = \"Mars/Olympus\" }"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an IANA time zone"), "{err}");
        let err = CasesFile::parse(
            "downgrade-chain = [1]\n[[case]]\nexpect = { action = \"admit\" }",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a model id"), "{err}");
    }
}

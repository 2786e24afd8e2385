//! What ships for teams that already run Grafana or Athena: the Grafana
//! dashboard queries only metrics a running gateway exports, with the labels
//! its legends name, and the Athena table reads only fields the invocation
//! log writes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::support::gateway::{ADMIN_TOKEN, Options, TenantSpec, TestGateway, call_model, timed_call};
use crate::support::{repo, wasm};

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// The `tollgate_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tollgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The `{{label}}`s of a legend.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|part| part.split_once("}}").map(|(label, _)| label.trim().to_owned()))
        .collect()
}

/// Sample name → every label name seen on it, from the exposition text.
/// A family declared but without samples yet (no policy failed, nothing was
/// shed) is listed under its sample names with no labels.
fn exported(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                out.entry(format!("{name}{suffix}")).or_default();
            }
        }
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = out.entry(line[..name_end].to_owned()).or_default();
        if let Some(body) = line[name_end..].strip_prefix('{').and_then(|b| b.split_once('}')) {
            for pair in body.0.split(',') {
                if let Some((label, _)) = pair.split_once('=') {
                    labels.insert(label.trim().to_owned());
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_queries_metrics_that_exist() {
    let path = repo().join("deploy/grafana/tollgate.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read the dashboard")).expect("valid JSON");
    // Traffic that gives every queried family a sample: calls, a policy
    // that traps, and a shadow policy that disagrees (tiered moves a free
    // tenant off Haiku).
    let tenant = TenantSpec {
        tier: "free",
        ..TenantSpec::new("acme", "allow-all")
    };
    let broken = TenantSpec::new("broken", "trap");
    let gw = TestGateway::start(Options {
        tenants: vec![tenant.clone(), broken.clone()],
        ..Options::default()
    })
    .await;
    let shadow = gw
        .raw()
        .put(format!("{}/admin/tenants/acme/policy/shadow", gw.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .body(wasm("tiered"))
        .send()
        .await
        .expect("admin API answers");
    assert_eq!(shadow.status(), 200, "{:?}", shadow.text().await);
    let client = gw.bearer_client(&tenant);
    timed_call(&client).await.expect("a call is admitted");
    call_model(&client, HAIKU)
        .await
        .expect("admitted by allow-all; tiered would downgrade it");
    // The trapping policy's failure mode decides; the verdict does not matter here.
    let _ = timed_call(&gw.bearer_client(&broken)).await;
    gw.idle().await;
    let exported = exported(&gw.metrics().await);

    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "the dashboard has its panels");
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: panel ids are unique"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: placed on the grid");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: uses the chosen datasource"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: has a query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} queries a tollgate metric");
            for name in &names {
                assert!(exported.contains_key(name), "{title}: {name} is not in /metrics");
                queried.insert(name.clone());
            }
            // The legend's labels come from the series the query returns
            // (checked where the family has samples in this run).
            let sampled: Vec<_> = names.iter().filter(|n| !exported[*n].is_empty()).collect();
            for label in legend_labels(target["legendFormat"].as_str().unwrap_or_default()) {
                assert!(
                    sampled.is_empty() || sampled.iter().any(|n| exported[*n].contains(&label)),
                    "{title}: legend label {label} is on none of {names:?}"
                );
            }
        }
    }
    let variable_query = dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .find(|v| v["name"] == "tenant")
        .expect("a tenant variable")["definition"]
        .as_str()
        .expect("definition")
        .to_owned();
    for name in metric_names(&variable_query) {
        assert!(exported.contains_key(&name), "the tenant variable reads {name}");
    }
    // The money, the decisions and the alert levels are all on the board.
    for needed in [
        "tollgate_cost_nano_usd_total",
        "tollgate_decisions_total",
        "tollgate_alert_level",
        "tollgate_aggregate_alert_level",
    ] {
        assert!(queried.contains(needed), "the dashboard shows {needed}");
    }
}

/// The column and struct-field names of one `CREATE EXTERNAL TABLE` body,
/// lower-cased as Athena reads them.
fn ddl_fields(sql: &str, table: &str) -> BTreeSet<String> {
    let start = sql.find(&format!("EXISTS {table} (")).expect("the table is defined");
    let body = &sql[start..];
    let body = &body[body.find('(').expect("(") + 1..body.find("\n)").expect("the closing )")];
    let mut fields = BTreeSet::new();
    for token in body.split([',', '<', '\n']) {
        let token = token.trim().replacen('`', "", 2);
        let token = token.as_str();
        let name = token
            .split(|c: char| c == ':' || c.is_whitespace())
            .next()
            .unwrap_or_default();
        let typed = token[name.len()..].trim_start().starts_with(':')
            || token[name.len()..]
                .trim_start()
                .starts_with(|c: char| c.is_ascii_lowercase());
        if !name.is_empty() && typed && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            fields.insert(name.to_owned());
        }
    }
    fields
}

fn json_keys(value: &Value, into: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (key, inner) in map {
            into.insert(key.to_lowercase());
            json_keys(inner, into);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_athena_table_reads_fields_the_log_writes() {
    let sql = std::fs::read_to_string(repo().join("deploy/athena/invocations.sql")).expect("read the DDL");
    let tenant = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![tenant.clone()],
        ..Options::default()
    })
    .await;
    timed_call(&gw.bearer_client(&tenant))
        .await
        .expect("a call is admitted");
    let mut record = gw.wait_for_records(1).await.remove(0);
    assert!(
        record.tollgate.billing.is_some(),
        "an admitted call records how it was billed"
    );
    // The fields a record carries only on some outcomes.
    record.tollgate.policy_failure = Some("timeout".into());
    record.tollgate.served_model_id = Some("amazon.nova-micro-v1:0".into());
    record.tollgate.error_type = Some("ThrottlingException".into());
    record.tollgate.hold_expired = true;
    record.tollgate.user = Some("ana".into());
    record.tollgate.use_case = Some("chat".into());
    record.input.cache_read_input_token_count = Some(0);
    record.input.cache_write_input_token_count = Some(0);
    let mut written = BTreeSet::new();
    json_keys(&serde_json::to_value(&record).expect("serialise"), &mut written);
    // `ts` is mapped onto `timestamp` by the SerDe (a reserved word in Athena).
    written.insert("ts".into());

    let fields = ddl_fields(&sql, "tollgate_invocations");
    assert!(fields.len() > 30, "the table reads the record: {fields:?}");
    let missing: Vec<_> = fields.difference(&written).collect();
    assert!(
        missing.is_empty(),
        "the DDL names fields the log never writes: {missing:?}"
    );
    for needed in [
        "tenant",
        "costnanousd",
        "decision",
        "requestmetadata",
        "inputtokencount",
    ] {
        assert!(fields.contains(needed), "the table reads {needed}");
    }
    // The view takes the money from tollgate's rows and names the same metadata keys the gateway forwards.
    for key in [
        "tollgate-tenant",
        "tollgate-user",
        "tollgate-use-case",
        "tollgate-decision",
    ] {
        assert!(sql.contains(&format!("'{key}'")), "the view reads {key}");
    }
    let metadata = &record.request_metadata;
    assert_eq!(metadata["tollgate-tenant"], "acme", "{metadata:?}");
}

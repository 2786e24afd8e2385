//! `tollgate report` end to end: the built binary over a real gateway's
//! invocation log (its totals are the ledger's), over Bedrock-format logs
//! laid out as S3 delivers them (priced by hand here), and over logs with
//! bad lines in them.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};
use support::gateway::{Options, TenantSpec, TestGateway};
use support::tollgate;
use tollgate_host::Catalog;
use tollgate_host::gateway::invocation_log::{InvocationRecord, TokenCounts, TollgateFields};

const SONNET: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn report(args: &[&str]) -> Run {
    let out = tollgate()
        .arg("report")
        .args(args)
        .output()
        .expect("run tollgate report");
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn report_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let run = report(&all);
    assert!(run.ok, "tollgate report {all:?} failed:\n{}{}", run.stdout, run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", run.stdout))
}

/// The group whose `field` is `value`.
fn group<'a>(report: &'a Value, field: &str, value: &str) -> &'a Value {
    report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g[field] == value)
        .unwrap_or_else(|| panic!("no group with {field} = {value}: {report:#}"))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

async fn converse(client: &Client, model: &str, user: &str) -> Result<(), String> {
    client
        .converse()
        .model_id(model)
        .messages(
            Message::builder()
                .role(ConversationRole::User)
                .content(ContentBlock::Text(
                    "Summarise the quarterly report in three bullets".into(),
                ))
                .build()
                .expect("message"),
        )
        .request_metadata("user", user)
        .request_metadata("use-case", "reports")
        .inference_config(InferenceConfiguration::builder().max_tokens(50).build())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{:?}", e.into_service_error()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_log_reports_each_tenants_ledger_spend_to_the_nano_dollar() {
    let acme = TenantSpec::new("acme", "allow-all");
    let globex = TenantSpec {
        tier: "free",
        extra: "included-tokens = 1000000",
        policy_config: "free-max-output-tokens = 200",
        ..TenantSpec::new("globex", "tiered")
    };
    let limited = TenantSpec {
        extra: "rpm = 2",
        ..TenantSpec::new("limited", "allow-all")
    };
    let poor = TenantSpec {
        budget_usd: "0.00002",
        ..TenantSpec::new("poor", "budget-guard")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone(), globex.clone(), limited.clone(), poor.clone()],
        ..Options::default()
    })
    .await;

    let client = gw.sigv4_client(&acme);
    for user in ["alice", "alice", "bob"] {
        converse(&client, SONNET, user).await.expect("acme's call");
    }
    // The free tier's Sonnet calls are served by Nova Micro.
    let client = gw.bearer_client(&globex);
    for _ in 0..2 {
        converse(&client, SONNET, "carol")
            .await
            .expect("globex's downgraded call");
    }
    // Two requests a minute: one of the next four is throttled, even across a minute's turn.
    let client = gw.sigv4_client(&limited);
    let mut throttled = 0;
    for _ in 0..4 {
        if converse(&client, NOVA_MICRO, "dave").await.is_err() {
            throttled += 1;
        }
    }
    assert!(throttled >= 1, "rpm = 2 throttles a call");
    // A tiny budget runs out.
    let client = gw.sigv4_client(&poor);
    let mut rejected = false;
    for _ in 0..20 {
        if converse(&client, NOVA_MICRO, "erin").await.is_err() {
            rejected = true;
            break;
        }
    }
    assert!(rejected, "the budget ran out");
    gw.idle().await;

    let config = gw.dir().join("tollgate.toml");
    // The config names the log, its budgets and its prices.
    let by_tenant = report_json(&["--config", path(&config)]);
    for tenant in ["acme", "globex", "limited", "poor"] {
        let state = gw.settled(tenant).await;
        let row = group(&by_tenant, "tenant", tenant);
        assert_eq!(
            row["spend_nano_usd"], state["spent-nano-usd"],
            "{tenant}: {row:#}\n{state:#}"
        );
        let spent = state["spent-nano-usd"].as_u64().expect("spent");
        assert_eq!(
            row["spend_usd"],
            format!("{}.{:09}", spent / 1_000_000_000, spent % 1_000_000_000)
        );
    }
    let acme_row = group(&by_tenant, "tenant", "acme");
    assert_eq!(
        (acme_row["calls"].as_u64(), acme_row["admitted"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(acme_row["budget_nano_usd"], 100_000_000_000u64);
    assert_eq!(acme_row["budget_period"], "monthly");
    let globex_row = group(&by_tenant, "tenant", "globex");
    assert_eq!(globex_row["downgraded"], 2);
    assert_eq!(globex_row["downgraded_percent"], 100.0);
    assert_eq!(globex_row["savings_unknown_calls"], 0);
    // What the same usage would have cost on Sonnet, less what Nova Micro cost.
    let catalog = Catalog::embedded();
    let saved: u64 = gw
        .records()
        .iter()
        .filter(|r| r.tollgate.tenant == "globex")
        .map(|r| {
            let usage = r.tollgate.billing.as_ref().and_then(|b| b.usage).expect("billed usage");
            catalog.cost(SONNET, &usage.into()).expect("priced").get() - r.tollgate.cost_nano_usd
        })
        .sum();
    assert!(saved > 0);
    assert_eq!(globex_row["savings_nano_usd"], saved, "{globex_row:#}");
    let limited_row = group(&by_tenant, "tenant", "limited");
    assert_eq!(limited_row["throttled"], throttled);
    assert!(limited_row["throttled_percent"].as_f64().expect("share") > 0.0);
    assert_eq!(group(&by_tenant, "tenant", "poor")["rejected"], 1);
    let total: u64 = by_tenant["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["spend_nano_usd"].as_u64().expect("spend"))
        .sum();
    assert_eq!(by_tenant["total"]["spend_nano_usd"], total);

    // The users and use case the callers sent, as tollgate forwarded them.
    let log = gw.log_path();
    let by_user = report_json(&["--log", path(&log), "--tenant", "acme", "--by", "user,use-case"]);
    let groups = by_user["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{by_user:#}");
    assert_eq!(group(&by_user, "user", "alice")["calls"], 2);
    assert_eq!(group(&by_user, "user", "bob")["use_case"], "reports");
    assert_eq!(by_user["total"]["spend_nano_usd"], acme_row["spend_nano_usd"]);
    // Refused calls forward nothing, yet stay attributed to their callers.
    let refused = report_json(&[
        "--log",
        path(&log),
        "--tenant",
        "limited",
        "--tenant",
        "poor",
        "--by",
        "user",
    ]);
    assert_eq!(group(&refused, "user", "dave")["throttled"], throttled, "{refused:#}");
    assert_eq!(group(&refused, "user", "erin")["rejected"], 1, "{refused:#}");
    assert_eq!(by_user["groups"][0]["budget_usd"], Value::Null, "not grouped by tenant");
}

/// Writes `records` as one gzipped S3 object at `dir/relative`.
fn write_gz(dir: &Path, relative: &str, records: &[Value]) -> PathBuf {
    let file = dir.join(relative);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    let mut gz = GzEncoder::new(std::fs::File::create(&file).expect("create"), Compression::default());
    for r in records {
        writeln!(gz, "{r}").expect("write");
    }
    gz.finish().expect("finish");
    file
}

/// One record as Bedrock writes it (only the fields that matter here, plus some that do not).
fn bedrock(time: &str, region: &str, model: &str, tokens: [u64; 4], pairs: &[(&str, &str)]) -> Value {
    let metadata: Map<String, Value> = pairs.iter().map(|(k, v)| ((*k).into(), json!(v))).collect();
    json!({
        "schemaType": "ModelInvocationLog",
        "schemaVersion": "1.0",
        "timestamp": time,
        "accountId": "111122223333",
        "identity": {"arn": "arn:aws:sts::111122223333:assumed-role/tollgate/gateway"},
        "region": region,
        "requestId": format!("req-{time}"),
        "operation": "Converse",
        "modelId": model,
        "input": {
            "inputContentType": "application/json",
            "inputBodyJson": {"messages": [{"role": "user", "content": [{"text": "Hello"}]}]},
            "inputTokenCount": tokens[0],
            "cacheReadInputTokenCount": tokens[2],
            "cacheWriteInputTokenCount": tokens[3]
        },
        "output": {
            "outputContentType": "application/json",
            "outputBodyJson": {
                "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
                "stopReason": "end_turn",
                "usage": {"inputTokens": tokens[0], "outputTokens": tokens[1], "totalTokens": tokens[0] + tokens[1]}
            },
            "outputTokenCount": tokens[1]
        },
        "requestMetadata": metadata
    })
}

/// Bedrock's S3 layout for one account, region and hour.
fn s3_key(region: &str, hour: &str, name: &str) -> String {
    format!("AWSLogs/111122223333/BedrockModelInvocationLogs/{region}/{hour}/{name}")
}

#[test]
fn bedrocks_own_s3_logs_are_priced_from_the_catalog() {
    let dir = tempfile::tempdir().expect("temp dir");
    let haiku_45_us = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
    let acme = |user: &'static str| {
        vec![
            ("tollgate-tenant", "acme"),
            ("tollgate-decision", "admit"),
            ("tollgate-user", user),
            ("tollgate-use-case", "support"),
        ]
    };
    let plain = bedrock(
        "2026-11-27T10:15:00Z",
        "us-east-1",
        haiku_45_us,
        [100, 300, 2000, 1000],
        &acme("alice"),
    );
    // The same call, its 1000 cache writes logged as 1-hour ones.
    let mut one_hour = bedrock(
        "2026-11-27T10:16:00Z",
        "us-east-1",
        haiku_45_us,
        [100, 300, 2000, 1000],
        &acme("bob"),
    );
    one_hour["output"]["outputBodyJson"]["usage"]["cacheWriteInputTokens"] = json!(1000);
    one_hour["output"]["outputBodyJson"]["usage"]["cacheDetails"] = json!([{"ttl": "1h", "inputTokens": 1000}]);
    write_gz(
        dir.path(),
        &s3_key("us-east-1", "2026/11/27/10", "20261127T1015Z_a1b2.json.gz"),
        &[plain, one_hour],
    );
    let globex = [("tollgate-tenant", "globex"), ("tollgate-decision", "admit")];
    let downgraded = [
        ("tollgate-tenant", "globex"),
        ("tollgate-decision", "downgrade"),
        ("tollgate-original-model", SONNET),
    ];
    write_gz(
        dir.path(),
        &s3_key("eu-central-1", "2026/11/28/09", "20261128T0900Z_c3d4.json.gz"),
        &[bedrock(
            "2026-11-28T09:00:00Z",
            "eu-central-1",
            "arn:aws:bedrock:eu-central-1::foundation-model/amazon.nova-micro-v1:0",
            [1000, 500, 0, 0],
            &globex,
        )],
    );
    // A plain .json object, a model with no price, and the permission-check object S3 delivery leaves.
    let hour = dir.path().join(s3_key("us-east-1", "2026/11/28/11", ""));
    std::fs::create_dir_all(&hour).expect("mkdir");
    let lines = [
        bedrock(
            "2026-11-28T11:00:00Z",
            "us-east-1",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            [1000, 200, 0, 0],
            &downgraded,
        ),
        bedrock(
            "2026-11-28T11:05:00Z",
            "us-east-1",
            "acme.unknown-model-v1:0",
            [10, 10, 0, 0],
            &globex,
        ),
    ]
    .map(|v| v.to_string())
    .join("\n");
    std::fs::write(hour.join("20261128T1100Z_e5f6.json"), lines).expect("write");
    std::fs::write(
        dir.path()
            .join("AWSLogs/111122223333/BedrockModelInvocationLogs/amazon-bedrock-logs-permission-check"),
        "",
    )
    .expect("write");

    let logs = path(dir.path());
    let by_tenant = report_json(&["--bedrock-logs", logs]);
    assert_eq!(by_tenant["files"], 3);
    assert_eq!(by_tenant["calls"], 5);
    // us. Haiku 4.5 is +10%: $1.10 in, $5.50 out, $0.11 cache read, $1.375 5m write, $2.20 1h write (per M).
    // alice: 100×1.10 + 300×5.50 + 2000×0.11 + 1000×1.375 = 110 + 1650 + 220 + 1375 = 3355 µ$ = 3_355_000 n$
    // bob:   110 + 1650 + 220 + 1000×2.20 = 4180 µ$ = 4_180_000 n$
    let acme = group(&by_tenant, "tenant", "acme");
    assert_eq!(acme["spend_nano_usd"], 3_355_000 + 4_180_000);
    assert_eq!(acme["spend_usd"], "0.007535000");
    assert_eq!(
        (&acme["cache_read_tokens"], &acme["cache_write_tokens"]),
        (&json!(4000), &json!(2000))
    );
    // eu-central-1 Nova Micro ($0.046 in, $0.184 out): 1000×0.046 + 500×0.184 = 46 + 92 = 138 µ$.
    // us-east-1 Claude 3.5 Haiku ($0.80, $4): 1000×0.80 + 200×4 = 1600 µ$; the unknown model: no price.
    let globex = group(&by_tenant, "tenant", "globex");
    assert_eq!(globex["spend_nano_usd"], 138_000 + 1_600_000);
    assert_eq!(globex["unpriced_calls"], 1);
    // The downgrade's Sonnet 4 price ($3, $15): 1000×3 + 200×15 = 6000 µ$, so 6000 − 1600 saved.
    assert_eq!(globex["savings_nano_usd"], 4_400_000);
    assert_eq!(globex["savings_usd"], "0.004400000");
    assert_eq!(by_tenant["problems"]["unpriced"]["acme.unknown-model-v1:0"]["calls"], 1);

    let by_user = report_json(&["--bedrock-logs", logs, "--tenant", "acme", "--by", "user,model,day"]);
    assert_eq!(group(&by_user, "user", "bob")["spend_nano_usd"], 4_180_000);
    assert_eq!(group(&by_user, "user", "alice")["model"], haiku_45_us);
    assert_eq!(group(&by_user, "user", "alice")["day"], "2026-11-27");

    // The unknown model is said on stderr, and --strict turns it into a failure.
    let run = report(&["--bedrock-logs", logs]);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stderr.contains("acme.unknown-model-v1:0"), "{}", run.stderr);
    let strict = report(&["--bedrock-logs", logs, "--strict"]);
    assert_eq!(strict.code, Some(1), "{}", strict.stderr);
}

/// A tollgate record of `tenant`'s call.
fn record(time: &str, tenant: &str, user: &str, decision: &str, cost: u64) -> String {
    let mut metadata = Map::new();
    metadata.insert("tollgate-tenant".into(), json!(tenant));
    metadata.insert("tollgate-decision".into(), json!(decision));
    metadata.insert("tollgate-user".into(), json!(user));
    serde_json::to_string(&InvocationRecord {
        schema_type: "ModelInvocationLog".into(),
        schema_version: "1.0".into(),
        timestamp: time.into(),
        request_id: format!("r-{time}"),
        operation: "Converse".into(),
        model_id: NOVA_MICRO.into(),
        input: TokenCounts {
            input_token_count: Some(100),
            ..TokenCounts::default()
        },
        output: TokenCounts {
            output_token_count: Some(10),
            ..TokenCounts::default()
        },
        request_metadata: metadata,
        tollgate: TollgateFields {
            tenant: tenant.into(),
            decision: decision.into(),
            requested_model_id: NOVA_MICRO.into(),
            cost_nano_usd: cost,
            charged_from: if cost > 0 { "usage" } else { "none" }.into(),
            ..TollgateFields::default()
        },
    })
    .expect("json")
}

/// A log and one file rotated from it, over two days and two tenants.
fn two_day_log(dir: &Path) -> PathBuf {
    let log = dir.join("invocations.jsonl");
    let rotated = [
        record("2026-11-27T08:00:00.000Z", "acme", "alice", "admit", 1_000),
        record("2026-11-27T09:00:00.000Z", "acme", "bob", "throttle", 0),
        record("2026-11-27T23:59:59.999Z", "globex", "carol", "admit", 20),
    ];
    let current = [
        record("2026-11-28T00:00:00.000Z", "acme", "alice", "admit", 300),
        record("2026-11-28T10:00:00.000Z", "acme", "alice", "reject", 0),
        record("2026-11-28T11:00:00.000Z", "globex", "carol", "admit", 7),
    ];
    std::fs::write(
        dir.join("invocations-20261127T235959Z-1.jsonl"),
        rotated.join("\n") + "\n",
    )
    .expect("write");
    std::fs::write(&log, current.join("\n") + "\n").expect("write");
    log
}

#[test]
fn filters_groupings_and_formats() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = two_day_log(dir.path());
    let log = path(&log);

    let all = report_json(&["--log", log, "--by", "tenant,day"]);
    assert_eq!(all["files"], 2, "the rotated file is read too");
    assert_eq!(all["total"]["spend_nano_usd"], 1_327);
    let rows: Vec<(String, String, u64)> = all["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["tenant"].as_str().expect("tenant").to_owned(),
                g["day"].as_str().expect("day").to_owned(),
                g["spend_nano_usd"].as_u64().expect("spend"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("acme".into(), "2026-11-27".into(), 1_000),
            ("acme".into(), "2026-11-28".into(), 300),
            ("globex".into(), "2026-11-27".into(), 20),
            ("globex".into(), "2026-11-28".into(), 7),
        ]
    );
    let acme_27 = &all["groups"][0];
    assert_eq!(
        (acme_27["throttled"].as_u64(), acme_27["throttled_percent"].as_f64()),
        (Some(1), Some(50.0))
    );

    // A date --until takes in that whole day; --since is inclusive.
    let window = report_json(&["--log", log, "--since", "2026-11-27T09:00:00Z", "--until", "2026-11-27"]);
    assert_eq!(window["until"], "2026-11-28T00:00:00.000Z");
    assert_eq!(window["calls"], 2);
    assert_eq!(window["filtered_out"], 4);
    assert_eq!(window["total"]["spend_nano_usd"], 20);

    let tenants = report_json(&["--log", log, "--tenant", "globex", "--by", "decision"]);
    assert_eq!(tenants["calls"], 2);
    assert_eq!(group(&tenants, "decision", "admit")["spend_nano_usd"], 27);

    let csv = report(&["--log", log, "--by", "user", "--format", "csv"]);
    assert!(csv.ok, "{}", csv.stderr);
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert!(
        lines[0].starts_with("user,calls,admitted,downgraded,throttled,rejected,"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains(",spend_usd,"), "{}", lines[0]);
    // alice: 3 calls, 2 admitted, 1 rejected; $0.000001300 spent.
    assert!(
        lines[1].starts_with("alice,3,2,0,0,1,0,0.00,0.00,33.33,0.000001300,"),
        "{}",
        lines[1]
    );
    assert_eq!(lines.len(), 4, "a header and three users: {}", csv.stdout);

    let table = report(&["--log", log]);
    assert!(table.ok, "{}", table.stderr);
    assert!(table.stdout.starts_with("6 calls from 2 files"), "{}", table.stdout);
    for cell in [
        "acme",
        "globex",
        "total",
        "$0.0000013 ",
        "25.0%",
        "$0.000000027",
        "budget",
    ] {
        assert!(table.stdout.contains(cell), "no {cell:?} in\n{}", table.stdout);
    }
}

#[test]
fn bad_lines_are_counted_located_and_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("invocations.jsonl");
    let good = record("2026-11-28T10:00:00.000Z", "acme", "alice", "admit", 500);
    let text = [
        good.as_str(),
        "{\"schemaType\": \"ModelInvocationLog\", \"tollgate\": {",
        "",
        "not json at all",
        &good.replace("2026-11-28T10:00:00.000Z", "yesterday"),
        good.as_str(),
    ]
    .join("\n");
    std::fs::write(&log, text).expect("write");
    let log_path = path(&log);

    let run = report(&["--log", log_path, "--format", "json"]);
    assert!(run.ok, "a bad line is not fatal: {}", run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(out["calls"], 2);
    assert_eq!(out["total"]["spend_nano_usd"], 1_000);
    assert_eq!(out["problems"]["malformed"], 3);
    let first = &out["problems"]["first_malformed"];
    assert_eq!(
        [
            first[0]["line"].as_u64(),
            first[1]["line"].as_u64(),
            first[2]["line"].as_u64()
        ],
        [Some(2), Some(4), Some(5)]
    );
    assert!(
        first[2]["error"].as_str().expect("error").contains("RFC 3339"),
        "{first:#}"
    );
    assert!(
        run.stderr.contains(&format!("{log_path}:2:")) && run.stderr.contains("skipped 3 malformed lines"),
        "{}",
        run.stderr
    );
    assert_eq!(report(&["--log", log_path, "--strict"]).code, Some(1));

    // Nothing readable at all is an error, not an empty report.
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "junk\nmore junk\n").expect("write");
    let run = report(&["--log", path(&junk)]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("junk.jsonl:1:"), "{}", run.stderr);

    // A truncated gzip download: its whole lines count, and the break is said.
    let bedrock_dir = dir.path().join("bedrock");
    let gz = write_gz(
        &bedrock_dir,
        "x.json.gz",
        &[bedrock(
            "2026-11-28T09:00:00Z",
            "us-east-1",
            NOVA_MICRO,
            [1000, 1000, 0, 0],
            &[],
        )],
    );
    let bytes = std::fs::read(&gz).expect("read");
    std::fs::write(&gz, &bytes[..bytes.len() - 6]).expect("truncate");
    let run = report(&["--bedrock-logs", path(&bedrock_dir)]);
    assert!(run.stderr.contains("could not be read past line"), "{}", run.stderr);

    // Missing inputs name themselves and what to do.
    let missing = report(&["--log", "/nonexistent/invocations.jsonl"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing
            .stderr
            .contains("no invocation log at /nonexistent/invocations.jsonl"),
        "{}",
        missing.stderr
    );
    let missing = report(&["--bedrock-logs", "/nonexistent/logs"]);
    assert!(
        missing.stderr.contains("does not exist") && missing.stderr.contains("aws s3 sync"),
        "{}",
        missing.stderr
    );
    let nothing = report(&[]);
    assert!(
        nothing.stderr.contains("--log") && nothing.stderr.contains("--bedrock-logs"),
        "{}",
        nothing.stderr
    );
    let bad_by = report(&["--log", log_path, "--by", "colour"]);
    assert!(bad_by.stderr.contains("\"colour\""), "{}", bad_by.stderr);
}

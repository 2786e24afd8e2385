//! `tollgate demo`: the gateway with the built-in mock Bedrock, three example
//! tenants on different policies and tiers, and a traffic generator that
//! drives them through admit, downgrade, throttle and reject, with a live
//! table. Everything runs on this machine; no AWS account is needed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::tls;
use anyhow::{Context, Result};
use tollgate_host::NanoUsd;
use tollgate_host::config::Config;
use tollgate_host::gateway::app::{self, Running};

use crate::policy_build;

/// One demo tenant: who, on which policy, and what its traffic asks for.
struct DemoTenant {
    id: &'static str,
    policy: &'static str,
    tier: &'static str,
    budget_usd: &'static str,
    extra: &'static str,
    policy_config: &'static str,
    model: &'static str,
    workers: usize,
    /// Pause between one worker's calls.
    pace_ms: u64,
}

const TENANTS: [DemoTenant; 3] = [
    DemoTenant {
        id: "acme",
        policy: "budget_guard",
        tier: "pro",
        budget_usd: "0.03",
        extra: "",
        policy_config: "downgrade-at-percent = 40\nreject-at-percent = 100\n",
        model: "anthropic.claude-sonnet-4-20250514-v1:0",
        workers: 2,
        pace_ms: 100,
    },
    DemoTenant {
        id: "globex",
        policy: "tiered",
        tier: "free",
        budget_usd: "5",
        extra: "rpm = 120\nincluded-tokens = 60000\n",
        policy_config: "free-max-output-tokens = 256\n",
        model: "anthropic.claude-3-5-haiku-20241022-v1:0",
        workers: 2,
        pace_ms: 150,
    },
    DemoTenant {
        id: "initech",
        policy: "forecast_guard",
        tier: "enterprise",
        budget_usd: "2",
        extra: "",
        policy_config: "downgrade-to = \"amazon.nova-lite-v1:0\"\n",
        model: "anthropic.claude-sonnet-4-20250514-v1:0",
        workers: 2,
        pace_ms: 200,
    },
];

/// The operator listener's token: the admin API and the dashboard's sign-in.
const DEMO_ADMIN_TOKEN: &str = "demo-admin-token-0123456789";

/// What the calls are for, so the dashboard's top use cases differ.
const USE_CASES: [&str; 3] = ["summaries", "search", "triage"];

const PROMPTS: [&str; 5] = [
    "Summarise this support ticket in two sentences and suggest a next step for the agent",
    "Write a friendly reply to a customer asking when their refund will arrive",
    "Classify the sentiment of: the new dashboard is fast but the export button is hidden",
    "Draft three subject lines for the spring product newsletter",
    "Explain in plain words what an inference profile is and why a team would use one",
];

pub struct DemoOptions {
    pub policies: Option<PathBuf>,
    /// Stop after this long instead of waiting for Ctrl-C.
    pub seconds: Option<f64>,
    pub listen: String,
}

/// Outcomes per tenant, as the traffic generator saw them.
#[derive(Default, Clone)]
struct Tally {
    counts: BTreeMap<&'static str, u64>,
    last: String,
}

type Tallies = Arc<Mutex<BTreeMap<&'static str, Tally>>>;

pub fn run(options: DemoOptions) -> Result<()> {
    println!("tollgate demo: the gateway, three tenants, live traffic\n");
    let start = Instant::now();
    let components = policy_build::build_examples(options.policies.clone())?;

    let work = std::env::temp_dir().join("tollgate-demo");
    // A fresh ledger and log each run; the compiled-policy cache is kept.
    for stale in ["ledger.redb", "invocations.jsonl"] {
        let _ = std::fs::remove_file(work.join(stale));
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let cert = tls::self_signed(&work)?;
    let config_path = work.join("tollgate.toml");
    std::fs::write(&config_path, config_text(&options.listen, &cert, &components))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let config = Config::load(&config_path)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = app::start(&config).await?;
        print_banner(&running, &cert.cert, &config_path, &work);
        let tallies: Tallies = Arc::new(Mutex::new(BTreeMap::new()));
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes())?)
            .build()?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut workers = Vec::new();
        for tenant in &TENANTS {
            for worker in 0..tenant.workers {
                workers.push(tokio::spawn(drive(
                    client.clone(),
                    running.url.clone(),
                    tenant,
                    worker,
                    Arc::clone(&tallies),
                    stop_rx.clone(),
                )));
            }
        }
        let interactive = std::io::stdout().is_terminal();
        let deadline = options.seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let signal = crate::serve::shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                _ = tick.tick() => {
                    render(&running, &tallies, interactive, start.elapsed());
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
            }
        }
        let _ = stop_tx.send(true);
        for w in workers {
            let _ = w.await;
        }
        render(&running, &tallies, false, start.elapsed());
        summary(&tallies);
        println!("invocation log: {}", work.join("invocations.jsonl").display());
        running.shutdown().await?;
        println!("tollgate demo: stopped cleanly");
        Ok(())
    })
}

fn config_text(listen: &str, cert: &tls::SelfSigned, components: &Path) -> String {
    let mut text = format!(
        "# Written by `tollgate demo`; run it yourself with: tollgate serve --config {config}\n\
         [server]\nlisten = \"{listen}\"\nadmin-listen = \"127.0.0.1:0\"\ntls-cert = {cert:?}\ntls-key = {key:?}\n\
         admin-token = \"{DEMO_ADMIN_TOKEN}\"\nshutdown-grace-secs = 5\n\n\
         [upstream]\nkind = \"mock\"\n[upstream.mock]\nlatency-ms = 15\nstream-event-interval-ms = 2\n\n\
         [ledger]\npath = \"ledger.redb\"\n\n[log]\ninvocations = \"invocations.jsonl\"\n\n\
         [engine]\ncache-dir = \"cache\"\n\n",
        config = std::env::temp_dir().join("tollgate-demo/tollgate.toml").display(),
        cert = cert.cert.display().to_string(),
        key = cert.key.display().to_string(),
    );
    for t in &TENANTS {
        text.push_str(&format!(
            "[tenants.{id}]\ntier = \"{tier}\"\nbudget-usd = \"{budget}\"\npolicy = {policy:?}\n{extra}\
             [[tenants.{id}.api-keys]]\nkey = \"{key}\"\n[tenants.{id}.policy-config]\n{config}\n",
            id = t.id,
            tier = t.tier,
            budget = t.budget_usd,
            policy = components.join(format!("{}.wasm", t.policy)).display().to_string(),
            extra = t.extra,
            key = demo_key(t.id),
            config = t.policy_config,
        ));
    }
    text
}

fn demo_key(tenant: &str) -> String {
    format!("{tenant}-demo-key-0123456789")
}

fn print_banner(running: &Running, cert: &Path, config: &Path, work: &Path) {
    let url = &running.url;
    let key = demo_key("acme");
    println!("\ngateway: {url}  (HTTPS, self-signed certificate: {})", cert.display());
    println!("config:  {}", config.display());
    println!("data:    {}", work.display());
    println!("\ntry it by hand while the demo runs:");
    println!(
        "  curl --cacert {} -H 'Authorization: Bearer {key}' -H 'content-type: application/json' \\\n    \
         {url}/model/amazon.nova-micro-v1:0/converse \\\n    \
         -d '{{\"messages\":[{{\"role\":\"user\",\"content\":[{{\"text\":\"Hello\"}}]}}]}}'",
        cert.display()
    );
    println!(
        "  AWS_BEARER_TOKEN_BEDROCK={key} python3 -c 'import boto3; c = boto3.client(\"bedrock-runtime\", \
         region_name=\"us-east-1\", endpoint_url=\"{url}\", verify=\"{}\"); print(c.converse(modelId=\"amazon.nova-micro-v1:0\", \
         messages=[{{\"role\": \"user\", \"content\": [{{\"text\": \"Hello\"}}]}}])[\"output\"])'",
        cert.display()
    );
    println!(
        "  metrics: curl --cacert {} {}/metrics  (the operator listener)",
        cert.display(),
        running.admin_url
    );
    println!(
        "  dashboard: {}/admin/dashboard  (sign in with the admin token {DEMO_ADMIN_TOKEN}; \
         the certificate is the self-signed one above)",
        running.admin_url
    );
    println!("\nCtrl-C stops the demo.\n");
    let _ = std::io::stdout().flush();
}

/// One worker of one tenant: calls in a loop until told to stop.
async fn drive(
    client: reqwest::Client,
    url: String,
    tenant: &'static DemoTenant,
    worker: usize,
    tallies: Tallies,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let key = demo_key(tenant.id);
    let mut n = worker;
    while !*stop.borrow() {
        n += 1;
        let prompt = PROMPTS[n % PROMPTS.len()];
        let stream = n.is_multiple_of(4);
        let op = if stream { "converse-stream" } else { "converse" };
        let body = serde_json::json!({
            "messages": [{"role": "user", "content": [{"text": prompt}]}],
            "inferenceConfig": {"maxTokens": 400},
            "requestMetadata": {"user": format!("user-{}", n % 7), "use-case": if stream { "chat" } else { USE_CASES[n % USE_CASES.len()] }},
        });
        let sent = client
            .post(format!("{url}/model/{}/{op}", tenant.model))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await;
        let (verdict, detail) = match sent {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                // Read the whole body (a stream to its end) so the call completes.
                let text = response.text().await.unwrap_or_default();
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                if status.is_success() {
                    let verdict = if header("x-tollgate-decision") == "downgrade" {
                        "downgrade"
                    } else {
                        "admit"
                    };
                    (verdict, format!("{verdict} → {}", header("x-tollgate-served-model")))
                } else if status.as_u16() == 429 {
                    ("throttle", format!("throttle, retry after {}s", header("retry-after")))
                } else {
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    ("reject", format!("reject: {}", short(&message, 90)))
                }
            }
            Err(e) => ("error", format!("error: {e}")),
        };
        {
            let mut all = tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let tally = all.entry(tenant.id).or_default();
            *tally.counts.entry(verdict).or_default() += 1;
            tally.last = detail;
        }
        // Pacing, so the demo reads like traffic and not a load test.
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(Duration::from_millis(tenant.pace_ms)) => {}
        }
    }
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

fn render(running: &Running, tallies: &Tallies, interactive: bool, elapsed: Duration) {
    let all = tallies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut out = String::new();
    if interactive {
        // Redraw in place below the banner: save nothing, just home and clear.
        out.push_str("\x1b[2J\x1b[H");
        out.push_str(&format!(
            "tollgate demo — {} — {:.0?} — Ctrl-C to stop\n\n",
            running.url, elapsed
        ));
    } else {
        out.push_str(&format!("--- {:.0?}\n", elapsed));
    }
    out.push_str(&format!(
        "{:<8} {:<15} {:<10} {:>21} {:>11} {:<7} {:>6} {:>6} {:>6} {:>6}  last decision\n",
        "tenant", "policy", "tier", "spent / budget", "burn $/h", "alert", "admit", "downgr", "thrott", "reject"
    ));
    let now = now_ms();
    for t in &TENANTS {
        let tenant = tollgate_host::TenantId::new(t.id).expect("demo ids are valid");
        let state = running.gateway.accounting().tenant_state(&tenant, t.tier, now);
        let tally = all.get(t.id).cloned().unwrap_or_default();
        let count = |k: &str| tally.counts.get(k).copied().unwrap_or(0);
        let (spend, burn, alert) = match state {
            Ok(s) => (
                format!("{} / {}", NanoUsd(s.budget.spent), NanoUsd(s.budget.limit)),
                format!("{}", NanoUsd(s.indicators.burn_rate_short)),
                format!("{:?}", s.alert).to_lowercase(),
            ),
            Err(e) => (format!("({e})"), String::new(), String::new()),
        };
        out.push_str(&format!(
            "{:<8} {:<15} {:<10} {:>21} {:>11} {:<7} {:>6} {:>6} {:>6} {:>6}  {}\n",
            t.id,
            t.policy,
            t.tier,
            spend,
            burn,
            alert,
            count("admit"),
            count("downgrade"),
            count("throttle"),
            count("reject"),
            short(&tally.last, 100),
        ));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

fn summary(tallies: &Tallies) {
    let all = tallies.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for tally in all.values() {
        for (k, v) in &tally.counts {
            *totals.entry(k).or_default() += v;
        }
    }
    let line: Vec<String> = ["admit", "downgrade", "throttle", "reject", "error"]
        .iter()
        .map(|k| format!("{k} {}", totals.get(k).copied().unwrap_or(0)))
        .collect();
    println!("\ndecisions: {}", line.join(", "));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

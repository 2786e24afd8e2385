//! Starts the real `tollgate serve` on a loopback port, in front of an
//! in-process mock Bedrock the test can inspect, and builds tenant clients
//! on the real AWS SDK.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::config::{Config, Region};
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use aws_smithy_types::retry::RetryConfig;
use serde_json::Value;
use tollgate_host::gateway::invocation_log::{InvocationLog, InvocationRecord};
use tollgate_host::upstream::mock::{MockBedrock, MockSettings};

use super::{component, tollgate};

pub const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// One tenant of the test gateway.
#[derive(Clone)]
pub struct TenantSpec {
    pub id: &'static str,
    pub policy: &'static str,
    pub tier: &'static str,
    pub budget_usd: &'static str,
    /// Extra TOML lines for the tenant table (rpm, included-tokens, ...).
    pub extra: &'static str,
    /// The `[tenants.<id>.policy-config]` body.
    pub policy_config: &'static str,
}

impl TenantSpec {
    pub fn new(id: &'static str, policy: &'static str) -> Self {
        TenantSpec {
            id,
            policy,
            tier: "pro",
            budget_usd: "100",
            extra: "",
            policy_config: "",
        }
    }

    pub fn bearer_key(&self) -> String {
        format!("{}-bearer-key-0123456789", self.id)
    }

    pub fn access_key_id(&self) -> String {
        format!("AKID{}", self.id.to_uppercase())
    }

    pub fn secret(&self) -> String {
        format!("{}-secret-access-key", self.id)
    }
}

/// Options of the test gateway.
#[derive(Default)]
pub struct Options {
    pub tenants: Vec<TenantSpec>,
    pub mock: MockSettings,
    pub https: bool,
    /// Extra lines for `[server]`.
    pub server_extra: &'static str,
    /// Lines for `[upstream.bedrock]` that replace `max-attempts = 1`.
    pub upstream_extra: &'static str,
    /// The upstream region, which prices the calls; `us-east-1` when empty.
    pub region: &'static str,
    /// TOML appended to the file, after the tenants (e.g. an `[estimator]` table).
    pub extra_toml: &'static str,
    /// Extra lines for `[engine]`.
    pub engine_extra: &'static str,
    /// The upstream URL, instead of the in-process mock's.
    pub upstream_url: Option<String>,
    /// Extra lines for `[ledger]` (sub-tables such as `[ledger.redis]` may follow).
    pub ledger_extra: String,
    /// The `[log]` table's lines, instead of `invocations = "invocations.jsonl"`.
    pub log_lines: Option<String>,
    /// Sign the calls to the upstream with SigV4, with [`UPSTREAM_ACCESS_KEY`]
    /// from the environment (the AWS credential chain), instead of sending them unsigned.
    pub upstream_sigv4: bool,
}

/// The AWS access key the gateway finds in its environment for the upstream.
pub const UPSTREAM_ACCESS_KEY: &str = "AKIDUPSTREAMTEST";
/// Its secret.
pub const UPSTREAM_SECRET: &str = "upstream/secret+TESTKEY";

/// A running `tollgate serve` process and its upstream.
pub struct TestGateway {
    pub url: String,
    /// The operator listener: admin API, metrics, readiness.
    pub admin_url: String,
    pub mock: MockBedrock,
    pub dir: tempfile::TempDir,
    pub cert_pem: Option<String>,
    child: Child,
}

impl TestGateway {
    pub async fn start(options: Options) -> TestGateway {
        let mock = MockBedrock::start(options.mock.clone()).await.expect("mock starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cert_pem = None;
        let tls_lines = if options.https {
            // The test trusts exactly this certificate, as a tenant would with `AWS_CA_BUNDLE`.
            let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
            let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, certified.cert.pem()).expect("write cert");
            std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
            cert_pem = Some(certified.cert.pem());
            format!(
                "tls-cert = {:?}\ntls-key = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            )
        } else {
            "plain-http = true\n".to_owned()
        };
        let mut toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin-listen = \"127.0.0.1:0\"\nadmin-token = \"{ADMIN_TOKEN}\"\nshutdown-grace-secs = 1\n{tls_lines}{}\n\
             [upstream]\nkind = \"bedrock\"\n[upstream.bedrock]\nendpoint = \"{}\"\nregion = \"{}\"\n\
             auth = \"{}\"\n{}\n\n[ledger]\npath = \"ledger.redb\"\n{}\n\n[log]\n{}\n\n\
             [engine]\ncache-dir = {:?}\n{}\n\n",
            options.server_extra,
            options.upstream_url.clone().unwrap_or_else(|| mock.url()),
            if options.region.is_empty() {
                "us-east-1"
            } else {
                options.region
            },
            if options.upstream_sigv4 { "sigv4" } else { "none" },
            if options.upstream_extra.is_empty() {
                "max-attempts = 1"
            } else {
                options.upstream_extra
            },
            options.ledger_extra,
            options
                .log_lines
                .as_deref()
                .unwrap_or("invocations = \"invocations.jsonl\""),
            std::env::temp_dir().join("tollgate-test-cache").display().to_string(),
            options.engine_extra,
        );
        for t in &options.tenants {
            toml.push_str(&format!(
                "[tenants.{id}]\ntier = \"{tier}\"\nbudget-usd = \"{budget}\"\npolicy = {policy:?}\n{deadline}{extra}\n\
                 [[tenants.{id}.api-keys]]\nkey = \"{bearer}\"\n[[tenants.{id}.access-keys]]\naccess-key-id = \"{akid}\"\n\
                 secret-access-key = \"{secret}\"\n[tenants.{id}.policy-config]\n{config}\n\n",
                id = t.id,
                tier = t.tier,
                budget = t.budget_usd,
                // A name is a built component; a path (with '/') is a file of the repository.
                policy = if t.policy.contains('/') {
                    super::repo().join(t.policy)
                } else {
                    component(t.policy)
                }
                .display()
                .to_string(),
                extra = t.extra,
                deadline = if t.extra.contains("deadline-ms") {
                    ""
                } else {
                    "deadline-ms = 200\n"
                },
                bearer = t.bearer_key(),
                akid = t.access_key_id(),
                secret = t.secret(),
                config = t.policy_config,
            ));
        }
        toml.push_str(options.extra_toml);
        let config_path = dir.path().join("tollgate.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let (child, url, admin_url) = spawn(dir.path()).await;
        TestGateway {
            url,
            admin_url,
            mock,
            dir,
            cert_pem,
            child,
        }
    }

    fn http_client(&self) -> aws_smithy_runtime_api::client::http::SharedHttpClient {
        let mut builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
        if let Some(pem) = &self.cert_pem {
            builder = builder.tls_context(
                TlsContext::builder()
                    .with_trust_store(TrustStore::empty().with_pem_certificate(pem.as_bytes()))
                    .build()
                    .expect("tls context"),
            );
        }
        builder.build_https()
    }

    /// A tenant's SDK client, signing with its access key (SigV4). Retries
    /// are off so each verdict reaches the test as it was given.
    pub fn sigv4_client(&self, tenant: &TenantSpec) -> Client {
        self.sigv4_client_with(&tenant.access_key_id(), &tenant.secret())
    }

    /// An SDK client signing with the given access key.
    pub fn sigv4_client_with(&self, access_key_id: &str, secret: &str) -> Client {
        let config = Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::from_keys(
                access_key_id,
                secret,
                None,
            ))
            .endpoint_url(&self.url)
            .retry_config(RetryConfig::disabled())
            .http_client(self.http_client())
            .build();
        Client::from_conf(config)
    }

    /// A tenant's SDK client with its Bedrock API key (bearer; HTTPS only).
    pub fn bearer_client(&self, tenant: &TenantSpec) -> Client {
        self.bearer_client_with(&tenant.bearer_key())
    }

    /// An SDK client with the given Bedrock API key.
    pub fn bearer_client_with(&self, key: &str) -> Client {
        let config = Config::builder()
            .behavior_version_latest()
            .region(Region::new("us-east-1"))
            .bearer_token(aws_sdk_bedrockruntime::config::Token::new(key.to_owned(), None))
            .endpoint_url(&self.url)
            .retry_config(RetryConfig::disabled())
            .http_client(self.http_client())
            .build();
        Client::from_conf(config)
    }

    /// A plain HTTP client for raw requests (bad input, admin API).
    pub fn raw(&self) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().tls_built_in_root_certs(false);
        if let Some(pem) = &self.cert_pem {
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("certificate"));
        }
        builder.build().expect("client")
    }

    /// A tenant's state from the admin API.
    pub async fn tenant_state(&self, tenant: &str) -> Value {
        self.admin_get(&format!("/admin/tenants/{tenant}")).await
    }

    /// `GET` on the admin API (`path` from `/admin`), with the admin token: its JSON.
    pub async fn admin_get(&self, path: &str) -> Value {
        self.raw()
            .get(format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin API answers")
            .json()
            .await
            .expect("JSON")
    }

    /// How many outcomes the policy-directory watcher has recorded.
    pub async fn policy_dir_generation(&self) -> u64 {
        self.admin_get("/admin/policy-dir").await["generation"]
            .as_u64()
            .expect("generation")
    }

    /// The watcher's generation and `tenant`'s file status once it records
    /// an outcome after `after` (the gateway waits up to 30 s for one).
    pub async fn next_policy_file_outcome(&self, tenant: &str, after: u64) -> (u64, Value) {
        let status = self.admin_get(&format!("/admin/policy-dir?after={after}")).await;
        let generation = status["generation"].as_u64().expect("generation");
        assert!(generation > after, "no new outcome within the gateway's wait: {status}");
        let file = status["files"]
            .as_array()
            .and_then(|files| files.iter().find(|f| f["tenant"] == tenant))
            .cloned()
            .unwrap_or(Value::Null);
        (generation, file)
    }

    /// `/readyz` on the operator listener: its status and text.
    pub async fn readyz(&self) -> (u16, String) {
        self.readyz_within(0).await
    }

    /// The status of the tenant listener's `/healthz`.
    pub async fn healthz(&self) -> u16 {
        let response = self
            .raw()
            .get(format!("{}/healthz", self.url))
            .send()
            .await
            .expect("healthz answers");
        response.status().as_u16()
    }

    /// `/readyz?wait-ms=N`: answers once everything is healthy, or after N ms.
    pub async fn readyz_within(&self, wait_ms: u64) -> (u16, String) {
        let response = self
            .raw()
            .get(format!("{}/readyz?wait-ms={wait_ms}", self.admin_url))
            .send()
            .await
            .expect("readyz answers");
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    }

    /// The operator listener's `/metrics` text. It must answer within 10 s,
    /// so a frozen gateway fails the test instead of hanging it.
    pub async fn metrics(&self) -> String {
        self.raw()
            .get(format!("{}/metrics", self.admin_url))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("text")
    }

    /// Waits until the gateway has charged and logged every call it
    /// started (it answers `/admin/idle` then), and returns the tenant's state.
    pub async fn settled(&self, tenant: &str) -> Value {
        self.idle().await;
        let state = self.tenant_state(tenant).await;
        assert_eq!(state["open-reservations"], 0, "{state}");
        state
    }

    pub async fn idle(&self) {
        let response = self
            .raw()
            .get(format!("{}/admin/idle", self.admin_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin API answers");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("invocations.jsonl")
    }

    pub fn records(&self) -> Vec<InvocationRecord> {
        InvocationLog::read_all(self.log_path()).unwrap_or_default()
    }

    /// The records once every started call is logged (a call the caller
    /// abandoned is logged by the gateway on its own time).
    pub async fn wait_for_records(&self, n: usize) -> Vec<InvocationRecord> {
        self.idle().await;
        let records = self.records();
        assert!(records.len() >= n, "fewer than {n} invocation records: {records:#?}");
        records
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gateway process's resident memory, in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// Kills the process (SIGKILL: nothing is flushed on the way out) and
    /// starts it again on the same files; the mock stays up.
    pub async fn restart(&mut self) {
        self.kill();
        self.start_again().await;
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as an orchestrator stops a replica; the process must exit
    /// within `within` (else it is killed and the test fails). Its status.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: a signal to our own child, whose pid we hold and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
        let child = &mut self.child;
        std::thread::scope(|scope| {
            let (done, exited) = std::sync::mpsc::channel();
            scope.spawn(move || {
                let _ = done.send(child.wait().expect("wait for tollgate serve"));
            });
            match exited.recv_timeout(within) {
                Ok(status) => status,
                Err(_) => {
                    // SAFETY: as above; SIGKILL ends the wait in the thread.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    panic!("tollgate serve did not exit within {within:?} of SIGTERM");
                }
            }
        })
    }

    /// Starts the process again on the same files, after [`Self::kill`].
    pub async fn start_again(&mut self) {
        let (child, url, admin_url) = spawn(self.dir.path()).await;
        (self.child, self.url, self.admin_url) = (child, url, admin_url);
    }

    /// Runs `tollgate reconcile` against this gateway once it is idle: every
    /// charge in the log recomputes, and every tenant's log total equals its
    /// ledger, to the nano-dollar. Returns the command's report.
    pub async fn reconcile(&self) -> String {
        self.reconcile_with(&[self.log_path()]).await
    }

    /// [`reconcile`](Self::reconcile) over several logs: those of every
    /// replica that shares this gateway's ledger.
    pub async fn reconcile_with(&self, logs: &[PathBuf]) -> String {
        self.idle().await;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command
            .arg("reconcile")
            .arg("--config")
            .arg(self.dir.path().join("tollgate.toml"))
            .arg("--admin-url")
            .arg(&self.admin_url);
        for log in logs {
            command.arg("--log").arg(log);
        }
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("join")
            .expect("run tollgate reconcile");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.contains("reconciliation exact"),
            "{report}"
        );
        report
    }

    /// `tollgate report --format json --strict` over `logs`, by tenant.
    pub async fn report_with(&self, logs: &[PathBuf]) -> Value {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        command.args(["report", "--format", "json", "--strict"]);
        for log in logs {
            command.arg("--log").arg(log);
        }
        let out = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("join")
            .expect("run tollgate report");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "tollgate report failed: {stderr}");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"))
    }
}

/// Starts `tollgate serve` on the config in `dir`; returns it and its two URLs.
async fn spawn(dir: &Path) -> (Child, String, String) {
    let config_path = dir.join("tollgate.toml");
    // Appended to, so a restart keeps the first run's log.
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .expect("stderr file");
    let mut child = tollgate()
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env_remove("TOLLGATE_LISTEN")
        // The credential chain finds these, and nothing of the machine's.
        .env("AWS_ACCESS_KEY_ID", UPSTREAM_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", UPSTREAM_SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start tollgate serve");
    let stdout = child.stdout.take().expect("stdout");
    // The first two lines name the endpoints; they are printed once the ports are open.
    let (line, admin_line) = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let mut admin_line = String::new();
        let _ = reader.read_line(&mut admin_line);
        // Keep draining so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        (line, admin_line)
    })
    .await
    .expect("read the first lines");
    let Some(url) = line.trim().strip_prefix("tollgate listening on ") else {
        let _ = child.kill();
        let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
        panic!("tollgate serve did not start: {line:?}\n{log}");
    };
    let admin_url = admin_line
        .trim()
        .strip_prefix("tollgate admin listening on ")
        .unwrap_or_else(|| panic!("no admin endpoint line: {admin_line:?}"))
        .to_owned();
    (child, url.to_owned(), admin_url)
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one record of a call whose gateway stopped during it: charged its
/// full hold, from the reservation, and said so. Returns the charge.
pub fn the_restored_charge(records: &[InvocationRecord]) -> u64 {
    assert_eq!(records.len(), 1, "{records:#?}");
    let record = &records[0].tollgate;
    assert_eq!(record.charged_from, "reservation", "{record:?}");
    assert!(
        record.reason.contains("in flight when its gateway stopped"),
        "{record:?}"
    );
    assert!(record.cost_nano_usd > 0);
    assert_eq!(record.cost_nano_usd, record.reserved_nano_usd);
    record.cost_nano_usd
}

/// The `[policy-dir]` table of a gateway watching `dir`, quick to react
/// (for [`Options::extra_toml`]).
pub fn watched_policy_dir(dir: &std::path::Path) -> &'static str {
    Box::leak(
        format!(
            "[policy-dir]\npath = {:?}\ndebounce-ms = 50\n",
            dir.display().to_string()
        )
        .into_boxed_str(),
    )
}

/// One Converse call: `Ok` with its latency, or the error's HTTP status and code.
pub async fn timed_call(client: &Client) -> Result<Duration, (u16, String)> {
    call_model(client, NOVA_MICRO).await
}

/// [`timed_call`] on the given model.
pub async fn call_model(client: &Client, model: &str) -> Result<Duration, (u16, String)> {
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("Say hello".into()))
        .build()
        .expect("message");
    let started = Instant::now();
    match client
        .converse()
        .model_id(model)
        .messages(message)
        .inference_config(InferenceConfiguration::builder().max_tokens(20).build())
        .send()
        .await
    {
        Ok(_) => Ok(started.elapsed()),
        Err(e) => {
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            let e = e.into_service_error();
            if std::env::var_os("TOLLGATE_TEST_VERBOSE").is_some() {
                eprintln!("{status} {:?}: {:?}", e.meta().code(), e.meta().message());
            }
            Err((status, e.meta().code().unwrap_or("?").to_owned()))
        }
    }
}

//! Neither a policy nor the log's disk can hurt the service: every invalid
//! verdict is decided by the tenant's failure mode (never a 5xx), a policy
//! failing call after call is skipped by its circuit breaker, callers that
//! leave while queued for the decision pool are still charged once, and a
//! stalled invocation-log disk slows calls without freezing the process or
//! losing a record. Through the real `tollgate serve` and the real AWS SDK.

mod support;

use support::gateway::{NOVA_MICRO, Options, TenantSpec, TestGateway, timed_call as call};

/// A static string for a generated tenant spec.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_policy_output_is_decided_by_the_failure_mode_never_a_5xx() {
    const OWNED: &str = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/ownednova";
    // Each class of bad output, as the policy's config for the scripted policy.
    let classes: [(&str, String); 11] = [
        (
            "unpriced",
            "action = \"downgrade\"\ntarget = \"acme.unknown-model-v1:0\"".into(),
        ),
        (
            "control",
            "action = \"downgrade\"\ntarget = \"amazon.nova-micro-v1:0\\r\\nforged\"".into(),
        ),
        (
            "costlier",
            "action = \"downgrade\"\ntarget = \"anthropic.claude-opus-4-20250514-v1:0\"".into(),
        ),
        ("stolen", format!("action = \"downgrade\"\ntarget = \"{OWNED}\"")),
        ("alphabet", "metadata = [[\"team\", \"semi;colon\"]]".into()),
        ("unicodespace", "metadata = [[\"team\", \"non\\u00a0breaking\"]]".into()),
        (
            "reserved",
            "metadata = [[\"tollgate-tenant\", \"someone-else\"]]".into(),
        ),
        ("longreason", format!("reason = \"{}\"", "x".repeat(2000))),
        (
            "manypairs",
            format!(
                "metadata = [{}]",
                (0..9)
                    .map(|i| format!("[\"k{i}\", \"v\"]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        ("longthrottle", "action = \"throttle\"\nretry-after-ms = 3600001".into()),
        ("zerocap", "max-output-tokens = 0".into()),
    ];
    let mut tenants = vec![TenantSpec {
        extra: leak(format!("inference-profiles = {{ \"{NOVA_MICRO}\" = \"{OWNED}\" }}")),
        ..TenantSpec::new("owner", "allow-all")
    }];
    for (name, config) in &classes {
        for (mode, extra) in [("c", ""), ("o", "failure-mode = \"open\"")] {
            tenants.push(TenantSpec {
                extra,
                policy_config: leak(config.clone()),
                ..TenantSpec::new(leak(format!("{name}{mode}")), "scripted")
            });
        }
    }
    let gw = TestGateway::start(Options {
        tenants: tenants.clone(),
        ..Options::default()
    })
    .await;
    for spec in tenants.iter().skip(1) {
        let client = gw.sigv4_client(spec);
        for _ in 0..3 {
            let outcome = call(&client).await;
            if spec.extra.is_empty() {
                let (status, code) = outcome.expect_err("fail-closed refuses the call");
                assert!((400..500).contains(&status), "{}: {status} {code}", spec.id);
            } else {
                outcome.unwrap_or_else(|e| panic!("{}: fail-open admits the call, got {e:?}", spec.id));
            }
        }
    }
    // Every call was forwarded as asked (fail-open) or not at all; none to a
    // model the policy named.
    for request in gw.mock.requests() {
        assert_eq!(request.model_id, NOVA_MICRO);
    }
    let records = gw.wait_for_records(tenants.len() * 3 - 3).await;
    for record in &records {
        let failure = record.tollgate.policy_failure.as_deref().unwrap_or_default();
        assert!(
            failure.starts_with("invalid-output") || failure.starts_with("oversized-output"),
            "{}: {failure:?}",
            record.tollgate.tenant
        );
        assert!(!failure.contains('\r') && !failure.contains('\n'), "{failure:?}");
    }
    let log = std::fs::read_to_string(gw.dir().join("stderr.log")).expect("stderr");
    assert!(!log.contains("\nforged"), "no forged log line");
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_failing_call_after_call_is_skipped_by_its_circuit_breaker() {
    let broken = TenantSpec {
        extra: "failure-mode = \"open\"",
        ..TenantSpec::new("broken", "trap")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![broken.clone()],
        // A long cool-down: no trial call happens during the test.
        engine_extra: "breaker-failures = 5\nbreaker-cooldown-ms = 30000",
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&broken);
    for _ in 0..20 {
        call(&client).await.expect("fail-open admits every call");
    }
    let records = gw.wait_for_records(20).await;
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| {
            let failure = r.tollgate.policy_failure.as_deref().unwrap_or_default();
            failure.split(':').next().unwrap_or_default()
        })
        .collect();
    assert_eq!(kinds[..5], ["trap"; 5], "{kinds:?}");
    assert_eq!(kinds[5..], ["circuit-open"; 15], "{kinds:?}");
    let skipped = records[19].tollgate.policy_failure.as_deref().unwrap_or_default();
    assert!(skipped.contains("failed its last 5 calls"), "{skipped}");
    let log = std::fs::read_to_string(gw.dir().join("stderr.log")).expect("stderr");
    assert!(log.contains("skipping it"), "the trip is logged once:\n{log}");
    let metrics = gw.metrics().await;
    for line in [
        "tollgate_policy_failures_total{tenant=\"broken\",kind=\"trap\"} 5",
        "tollgate_policy_failures_total{tenant=\"broken\",kind=\"circuit-open\"} 15",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_leave_while_queued_for_a_decision_are_each_charged_once() {
    use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
    use aws_smithy_types::timeout::TimeoutConfig;
    use std::time::Duration;

    // One decision at a time for this tenant, each spinning to its 300 ms
    // deadline and then admitted by fail-open: of three callers, two queue
    // behind the first, and two give up after 100 ms, long before theirs.
    let spinner = TenantSpec {
        extra: "deadline-ms = 300\nfailure-mode = \"open\"",
        ..TenantSpec::new("spinner", "spin")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![spinner.clone()],
        engine_extra: "breaker-failures = 0\ntenant-concurrency = 1\nqueue-timeout-ms = 5000",
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&spinner);
    let impatient = |client: aws_sdk_bedrockruntime::Client| async move {
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text("Say hello".into()))
            .build()
            .expect("message");
        client
            .converse()
            .model_id(NOVA_MICRO)
            .messages(message)
            .inference_config(InferenceConfiguration::builder().max_tokens(20).build())
            .customize()
            .config_override(
                aws_sdk_bedrockruntime::config::Config::builder().timeout_config(
                    TimeoutConfig::builder()
                        .operation_timeout(Duration::from_millis(100))
                        .build(),
                ),
            )
            .send()
            .await
    };
    let patient = {
        let client = client.clone();
        tokio::spawn(async move { call(&client).await })
    };
    let leaving: Vec<_> = (0..2).map(|_| tokio::spawn(impatient(client.clone()))).collect();
    for caller in leaving {
        let err = caller
            .await
            .expect("task")
            .expect_err("the caller gives up while queued");
        assert!(format!("{err:?}").to_lowercase().contains("timeout"), "{err:?}");
    }
    patient.await.expect("task").expect("the patient caller is served");

    // The gateway finishes every call on its own: each decided by the
    // failure mode, forwarded once, charged from its usage, none left open.
    let records = gw.wait_for_records(3).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    let mut charged = 0;
    for record in &records {
        assert_eq!(record.tollgate.charged_from, "usage", "{record:#?}");
        assert!(record.tollgate.policy_failure.is_some(), "{record:#?}");
        charged += record.tollgate.cost_nano_usd;
    }
    let state = gw.settled("spinner").await;
    assert_eq!(state["spent-nano-usd"], charged);
    assert_eq!(state["reserved-nano-usd"], 0);
    assert_eq!(gw.mock.requests().len(), 3, "each call reached the upstream once");
    call(&client).await.expect("the gateway still serves the tenant");
    gw.reconcile().await;
}

/// An invocation log on a disk that stalls: a FIFO that nobody reads until
/// the test sends on `resume`; then each line comes out on `lines`.
struct StalledLog {
    disk: tempfile::TempDir,
    path: std::path::PathBuf,
    resume: std::sync::mpsc::Sender<()>,
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

impl StalledLog {
    fn new() -> StalledLog {
        use std::io::{BufRead, BufReader};
        let disk = tempfile::tempdir().expect("temp dir");
        let path = disk.path().join("invocations.jsonl");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("mkfifo");
        assert!(made.success(), "mkfifo {}", path.display());
        // Opening either end of a FIFO waits for the other: this thread's open
        // meets the gateway's at its start. It reads only once told to.
        let (resume, resumed) = std::sync::mpsc::channel::<()>();
        let (line_out, lines) = std::sync::mpsc::channel::<String>();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            let file = std::fs::File::open(&reader_path).expect("open the FIFO");
            let _ = resumed.recv();
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                // What `fill` wrote, not a record.
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if line_out.send(line).is_err() {
                    break;
                }
            }
        });
        StalledLog {
            disk,
            path,
            resume,
            lines,
            reader,
        }
    }

    /// Fills the pipe with lines the reader skips, so the gateway's first
    /// write already finds the disk stalled. Otherwise the pipe's buffer
    /// takes a number of records first that depends on timing.
    fn fill(&self) {
        use std::io::{ErrorKind, Write};
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking, so filling stops where the pipe is full. The open
        // fails with ENXIO until the reader thread has begun opening its end.
        let mut pipe = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
            {
                Ok(pipe) => break pipe,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => std::thread::yield_now(),
                Err(e) => panic!("open the FIFO: {e}"),
            }
        };
        // Writes to a pipe of at most 4 KiB are whole or refused, so no
        // padding line is ever cut; single newlines then take the last bytes.
        let line = format!("{}\n", "#".repeat(1023));
        for chunk in [line.as_bytes(), b"\n"] {
            loop {
                match pipe.write(chunk) {
                    Ok(n) => assert_eq!(n, chunk.len(), "a pipe write of at most 4 KiB is whole"),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("fill the FIFO: {e}"),
                }
            }
        }
    }

    /// The `[log]` lines: this FIFO, a queue of four records, no rotation.
    fn settings(&self) -> String {
        format!(
            "invocations = {:?}\nqueue = 4\nrotate-every = \"never\"\n",
            self.path.display().to_string()
        )
    }
}

/// The invocation log's disk stalls: the log is a FIFO, already full, that
/// nobody reads until the test says so. Calls fill the writer's queue, then
/// wait for room; meanwhile `/healthz`, `/readyz`, `/metrics` and the admin
/// API answer at once. When the disk comes back every call completes, each
/// has exactly one record, and the ledger equals the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_disk_slows_calls_but_freezes_nothing_and_loses_no_record() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    const CALLERS: usize = 12;
    // The queue `StalledLog::settings` sets.
    const QUEUE: u64 = 4;
    let log = StalledLog::new();
    log.fill();
    let tenant = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![tenant.clone()],
        log_lines: Some(log.settings()),
        ..Options::default()
    })
    .await;
    let client = gw.bearer_client(&tenant);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (client, stop, served) = (client.clone(), Arc::clone(&stop), Arc::clone(&served));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    call(&client)
                        .await
                        .expect("a call waits for the disk; it does not fail");
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    // Every caller ends up waiting on the log, as the gauge shows. Each probe
    // has a timeout: a runtime frozen by the stall fails here, not by hanging.
    let http = gw.raw();
    let waiting = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("tollgate_log_waiting_calls "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // Checked back to back: each check is a round trip to the gateway, no timer.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = gw.metrics().await;
        if waiting(&metrics) == CALLERS as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the callers never all waited on the log:\n{metrics}"
        );
    }
    let stalled_at = served.load(Ordering::Relaxed);

    // Nothing else waits with them.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let health = http
            .get(format!("{}/healthz", gw.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("/healthz answers while the log is stalled");
        assert_eq!(health.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(250),
        "/healthz took {slowest:?} while the log was stalled"
    );
    let (ready, why) = gw.readyz().await;
    assert_eq!(ready, 200, "{why}");
    let state = gw.tenant_state("acme").await;
    assert!(state["spent-nano-usd"].as_u64() > Some(0), "{state}");
    // Still all waiting; and at most one queue of calls completed since,
    // as the writer may take the queue into its batch once before its first
    // write blocks on the full pipe.
    assert_eq!(waiting(&gw.metrics().await), CALLERS as u64, "the callers still wait");
    let completed = served.load(Ordering::Relaxed) - stalled_at;
    assert!(
        completed <= QUEUE,
        "{completed} calls completed while the disk was stalled"
    );

    // The disk comes back: the waiting calls complete and the callers stop.
    log.resume.send(()).expect("reader");
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    let calls = served.load(Ordering::Relaxed);
    assert!(calls > stalled_at, "the waiting calls completed");
    let state = gw.settled("acme").await;
    assert_eq!(waiting(&gw.metrics().await), 0);

    // One record per call, none lost, none twice; together they are the ledger.
    let (mut records, mut text) = (Vec::new(), String::new());
    while (records.len() as u64) < calls {
        let line = log
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} of {calls} records came out of the log", records.len()));
        let record: tollgate_host::gateway::invocation_log::InvocationRecord =
            serde_json::from_str(&line).expect("a record");
        records.push(record);
        text.push_str(&line);
        text.push('\n');
    }
    let ids: std::collections::HashSet<_> = records.iter().map(|r| r.tollgate.request_id.clone()).collect();
    assert_eq!(ids.len(), records.len(), "a record written twice");
    let charged: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    assert_eq!(state["spent-nano-usd"], charged);
    assert_eq!(
        gw.mock.requests().len() as u64,
        calls,
        "each call reached the upstream once"
    );
    let copy = log.disk.path().join("read-back.jsonl");
    std::fs::write(&copy, text).expect("write the records");
    gw.reconcile_with(&[copy]).await;
    call(&client).await.expect("the gateway still serves the tenant");
    drop(gw);
    log.reader.join().expect("reader");
}

/// The log's disk stalls and the gateway is told to stop (SIGTERM): it
/// still exits, within the grace for calls, the wait for idle and the wait
/// for the log. Every charged call's record is either in the log or on
/// standard error after `tollgate-unwritten-record` (a record the disk took
/// in part may be in both). `tollgate restore-log` puts them back once each,
/// and the records together equal the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_on_a_stalled_log_disk_exits_and_prints_every_record_not_written() {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};
    use tollgate_host::gateway::invocation_log::{InvocationLog, InvocationRecord};

    const CALLERS: usize = 6;
    let log = StalledLog::new();
    // Full before the first write: otherwise the callers can all be counted
    // waiting while the pipe still has room, and the records then fit.
    log.fill();
    let tenant = TenantSpec::new("acme", "allow-all");
    let mut gw = TestGateway::start(Options {
        tenants: vec![tenant.clone()],
        log_lines: Some(log.settings()),
        ..Options::default()
    })
    .await;
    let client = gw.bearer_client(&tenant);
    // Each caller calls until a call fails: the one cut by the shutdown.
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { while call(&client).await.is_ok() {} })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = gw.metrics().await;
        let waiting = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tollgate_log_waiting_calls "))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if waiting == Some(CALLERS) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the callers never all waited on the log:\n{metrics}"
        );
    }
    // Every caller waits on the log, so every call started has been charged.
    let state = gw.tenant_state("acme").await;
    let (spent, calls) = (
        state["spent-nano-usd"].as_u64().expect("spent"),
        state["calls-all-periods"].as_u64().expect("calls"),
    );
    assert!(calls > CALLERS as u64, "{state}");

    // 1 s of grace for the calls, 10 s for idle, 5 s for the log, and a margin.
    let status = tokio::task::block_in_place(|| gw.terminate(Duration::from_secs(45)));
    assert!(status.success(), "tollgate serve exited with {status}");
    for caller in callers {
        caller.await.expect("caller");
    }

    // What the disk took, read now that the gateway has gone, as a file; a
    // torn last line keeps no newline, as on a disk.
    log.resume.send(()).expect("reader");
    let mut taken = Vec::new();
    while let Ok(line) = log.lines.recv_timeout(Duration::from_secs(30)) {
        taken.push(line);
    }
    let in_log = taken
        .iter()
        .filter(|l| serde_json::from_str::<InvocationRecord>(l).is_ok())
        .count();
    let mut text = taken.join("\n");
    if taken
        .last()
        .is_some_and(|l| serde_json::from_str::<InvocationRecord>(l).is_ok())
    {
        text.push('\n');
    }
    let copy = log.disk.path().join("taken.jsonl");
    std::fs::write(&copy, text).expect("write the log");

    let stderr_path = gw.dir().join("stderr.log");
    let stderr = std::fs::read_to_string(&stderr_path).expect("stderr");
    let printed = stderr
        .lines()
        .filter(|l| l.starts_with("tollgate-unwritten-record "))
        .count();
    assert!(
        printed >= CALLERS,
        "{printed} records printed, {in_log} in the log:\n{stderr}"
    );
    assert!(
        stderr.contains("did not take every record"),
        "the operator is told why:\n{stderr}"
    );

    // Put back: each call's record once, and together they equal the ledger.
    let restore = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["restore-log", "--log"])
            .arg(&copy)
            .arg("--from")
            .arg(&stderr_path)
            .output()
            .expect("run tollgate restore-log");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = restore();
    let records = InvocationLog::read_all(&copy).expect("a log of whole records");
    let ids: HashSet<&str> = records.iter().map(|r| r.tollgate.request_id.as_str()).collect();
    assert_eq!(
        (records.len() as u64, ids.len() as u64),
        (calls, calls),
        "{in_log} records in the log and {printed} printed, for {calls} calls: {said}"
    );
    let charged: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    assert_eq!(charged, spent, "the records equal the ledger");
    let again = restore();
    assert!(again.contains("0 appended"), "{again}");
    assert_eq!(InvocationLog::read_all(&copy).expect("log").len(), records.len());
    log.reader.join().expect("reader");
}

//! Three `tollgate serve` replicas on one Redis, called by the real AWS SDK
//! spread across them: one budget, one RPM window, one ledger that equals
//! the sum of their three invocation logs; Redis killed under load and
//! brought back without restarting any replica.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
use tollgate_host::upstream::mock::MockSettings;

use crate::support::gateway::{Options, TenantSpec, TestGateway};
use crate::support::redis::RedisServer;

const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

fn message(text: &str) -> Message {
    Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .expect("role and content are set")
}

/// One call, Converse or ConverseStream read to its end; `Err` is the error code.
async fn call(client: &Client, stream: bool, max_tokens: i32) -> Result<(), String> {
    let config = InferenceConfiguration::builder().max_tokens(max_tokens).build();
    let code = |meta: &aws_smithy_types::error::ErrorMetadata| meta.code().unwrap_or("?").to_owned();
    if stream {
        let mut out = client
            .converse_stream()
            .model_id(NOVA_MICRO)
            .messages(message("Write a short note about budgets"))
            .inference_config(config)
            .send()
            .await
            .map_err(|e| code(e.into_service_error().meta()))?;
        while out.stream.recv().await.map_err(|e| format!("stream: {e}"))?.is_some() {}
        Ok(())
    } else {
        client
            .converse()
            .model_id(NOVA_MICRO)
            .messages(message("Write a short note about budgets"))
            .inference_config(config)
            .send()
            .await
            .map(drop)
            .map_err(|e| code(e.into_service_error().meta()))
    }
}

async fn fleet(server: &RedisServer, tenants: Vec<TenantSpec>, mock: MockSettings) -> Vec<TestGateway> {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            TestGateway::start(Options {
                tenants: tenants.clone(),
                mock: mock.clone(),
                ledger_extra: format!(
                    "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"fleet\"\nretry-ms = 300\n",
                    server.url()
                ),
                ..Options::default()
            })
            .await,
        );
    }
    replicas
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// c=64 over three replicas, Converse and ConverseStream mixed, random
/// output lengths, one caller in twenty hanging up: the budget holds to the
/// nano-dollar and `tollgate reconcile` finds the ledger equal to the sum
/// of the three logs. `TOLLGATE_FLEET_CALLERS=256` runs it at c=256 (a
/// benchmark run, in `benches/RESULTS.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_keep_one_budget_exactly() {
    let server = RedisServer::start();
    let tight = TenantSpec {
        budget_usd: "0.0004",
        ..TenantSpec::new("tight", "allow-all")
    };
    let replicas = fleet(
        &server,
        vec![tight.clone()],
        MockSettings {
            latency_ms: 20,
            stream_event_interval_ms: 2,
            ..MockSettings::default()
        },
    )
    .await;
    let clients: Vec<Client> = replicas.iter().map(|r| r.sigv4_client(&tight)).collect();
    let callers: u64 = std::env::var("TOLLGATE_FLEET_CALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let client = clients[(caller % 3) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = caller * 7919 + 1;
            let mut outcomes = Vec::new();
            for _ in 0..4 {
                let stream = xorshift(&mut rng).is_multiple_of(2);
                let max_tokens = 20 + (xorshift(&mut rng) % 280) as i32;
                if xorshift(&mut rng).is_multiple_of(20) {
                    // Hangs up before the answer: the call still ran, and is charged.
                    let _ = tokio::time::timeout(Duration::from_millis(5), call(&client, stream, max_tokens)).await;
                    continue;
                }
                outcomes.push(call(&client, stream, max_tokens).await);
            }
            outcomes
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for task in tasks {
        for outcome in task.await.expect("caller") {
            match outcome {
                Ok(()) => admitted += 1,
                Err(code) => {
                    assert_eq!(code, "ServiceQuotaExceededException");
                    refused += 1;
                }
            }
        }
    }
    assert!(admitted > 0 && refused > 0, "admitted {admitted}, refused {refused}");
    let mut logged = 0u64;
    let mut records = 0;
    for replica in &replicas {
        replica.idle().await;
        let log = replica.records();
        records += log.len();
        logged += log.iter().map(|r| r.tollgate.cost_nano_usd).sum::<u64>();
    }
    // Every replica shows the same, fleet-wide figures.
    let mut spent = Vec::new();
    for replica in &replicas {
        let state = replica.settled("tight").await;
        spent.push(state["spent-nano-usd"].as_u64().expect("spent"));
    }
    assert!(spent.iter().all(|s| *s == spent[0]), "{spent:?}");
    assert!(spent[0] <= 400_000, "spent {} of a 400000 budget", spent[0]);
    assert_eq!(logged, spent[0], "the ledger is the sum of the three logs");
    // A caller that hung up before its request was sent made no call.
    assert!(
        (admitted + refused..=callers as usize * 4).contains(&records),
        "one record per call that reached a replica: {records}"
    );
    eprintln!(
        "c={callers}: {admitted} admitted, {refused} refused, {records} records, spent {} of 400000 nano-USD",
        spent[0]
    );
    let logs: Vec<PathBuf> = replicas.iter().map(TestGateway::log_path).collect();
    replicas[1].reconcile_with(&logs).await;
}

fn minute_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 60
}

/// rpm = 60 is 60 calls a minute for the whole fleet, not per replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_is_counted_once_for_the_fleet() {
    let server = RedisServer::start();
    // One tenant per attempt: a run that crossed a minute's boundary is not
    // a measurement of one minute, and the next runs at once on a fresh tenant.
    let tenants: Vec<TenantSpec> = ["limiteda", "limitedb", "limitedc"]
        .into_iter()
        .map(|id| TenantSpec {
            extra: "rpm = 60",
            ..TenantSpec::new(id, "allow-all")
        })
        .collect();
    let replicas = fleet(&server, tenants.clone(), MockSettings::default()).await;
    for tenant in &tenants {
        let minute = minute_now();
        let mut tasks = Vec::new();
        for replica in &replicas {
            let client = replica.sigv4_client(tenant);
            // Calls until this replica is refused.
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0;
                loop {
                    match call(&client, false, 20).await {
                        Ok(()) => admitted += 1,
                        Err(code) => {
                            assert_eq!(code, "ThrottlingException");
                            return admitted;
                        }
                    }
                }
            }));
        }
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.expect("caller");
        }
        if minute_now() == minute {
            assert_eq!(admitted, 60, "rpm = 60 across three replicas");
            return;
        }
    }
    panic!("three runs in a row crossed a minute's boundary");
}

/// Redis killed under load: calls are refused with a clear 503 (fail
/// closed), calls already sent are charged once it returns, readiness
/// follows it both ways, and no replica is restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_and_recovers_without_a_restart() {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let replicas = fleet(
        &server,
        vec![acme.clone()],
        MockSettings {
            latency_ms: 300,
            ..MockSettings::default()
        },
    )
    .await;
    let clients: Vec<Client> = replicas.iter().map(|r| r.sigv4_client(&acme)).collect();
    call(&clients[0], false, 50).await.expect("a call before the crash");

    // Calls in flight at the upstream when Redis dies.
    let mut in_flight = Vec::new();
    for i in 0..6 {
        let client = clients[i % 3].clone();
        in_flight.push(tokio::spawn(async move { call(&client, i % 2 == 0, 50).await }));
    }
    // Each replica has admitted its calls (the mock has them) before the kill.
    for (replica, calls) in replicas.iter().zip([3, 2, 2]) {
        while replica.mock.requests().len() < calls {
            tokio::task::yield_now().await;
        }
    }
    server.kill();
    for task in in_flight {
        task.await.expect("caller").expect("a call already sent is answered");
    }
    let kept = replicas
        .iter()
        .map(|r| std::fs::read_to_string(r.dir().join("stderr.log")).unwrap_or_default())
        .filter(|log| log.contains("the charge is kept"))
        .count();
    assert_eq!(kept, 3, "every replica kept the charges of its calls in flight");

    let (status, text) = replicas[2].readyz().await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("ledger"), "{text}");
    for client in &clients {
        let refused = call(client, false, 50).await.expect_err("fail closed");
        assert_eq!(refused, "ServiceUnavailableException");
    }
    // The refusal's record is written by the log's thread: wait until it is on disk.
    replicas[0].idle().await;
    let refusal = replicas[0]
        .records()
        .into_iter()
        .rev()
        .find(|r| r.tollgate.status == 503)
        .expect("the refusal is logged");
    assert_eq!(refusal.tollgate.cost_nano_usd, 0, "a refused call costs nothing");

    server.restart();
    for replica in &replicas {
        // Ready again once Redis answers and every kept charge is written.
        let (status, text) = replica.readyz_within(10_000).await;
        assert_eq!((status, text.as_str()), (200, "ready\n"));
    }
    call(&clients[1], true, 50)
        .await
        .expect("service resumes without a restart");

    let mut logged = 0;
    for replica in &replicas {
        replica.idle().await;
        logged += replica.records().iter().map(|r| r.tollgate.cost_nano_usd).sum::<u64>();
    }
    let state = replicas[0].settled("acme").await;
    assert_eq!(
        state["spent-nano-usd"].as_u64(),
        Some(logged),
        "no charge lost, none doubled: {state}"
    );
    assert_eq!(state["calls-all-periods"].as_u64(), Some(8), "{state}");
    let logs: Vec<PathBuf> = replicas.iter().map(TestGateway::log_path).collect();
    replicas[0].reconcile_with(&logs).await;
}

/// `fail-open-with-allowance`: with Redis down, a tenant's calls go on up to
/// its local allowance, readiness says "degraded" without taking the replica
/// out, and when Redis returns every charge of the outage lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_admits_up_to_the_allowance_and_writes_it_back() {
    let mut server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"open\"\nretry-ms = 100\n\
             failure-mode = \"fail-open-with-allowance\"\nallowance-usd = \"0.0002\"\n",
            server.url()
        ),
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme);
    call(&client, false, 50).await.expect("a call with Redis up");
    let before = gw.settled("acme").await["spent-nano-usd"].as_u64().expect("spent");

    server.kill();
    let mut admitted = 0;
    let refused = loop {
        match call(&client, admitted % 2 == 0, 50).await {
            Ok(()) => admitted += 1,
            Err(code) => break code,
        }
        assert!(admitted < 1_000, "the allowance never ran out");
    };
    assert!(admitted > 0, "no call was admitted on the allowance");
    assert_eq!(refused, "ServiceUnavailableException");
    let (status, text) = gw.readyz().await;
    assert_eq!((status, text.contains("degraded")), (200, true), "{text}");

    server.restart();
    // Healthy again, not merely degraded, once every kept charge is written.
    let (status, text) = gw.readyz_within(10_000).await;
    assert_eq!((status, text.as_str()), (200, "ready\n"));
    gw.idle().await;
    let records = gw.records();
    let logged: u64 = records.iter().map(|r| r.tollgate.cost_nano_usd).sum();
    let state = gw.settled("acme").await;
    assert_eq!(
        state["spent-nano-usd"].as_u64(),
        Some(logged),
        "every charge once: {state}"
    );
    assert!(
        logged - before <= 200_000,
        "the outage spent {} of a 200000 allowance",
        logged - before
    );
    assert_eq!(state["calls-all-periods"].as_u64(), Some(1 + admitted), "{state}");
    gw.reconcile().await;
}

/// An upstream that times out after the send, on the Redis ledger: the call
/// may have run, so it is charged its hold, once, and not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_timeout_after_the_send_is_charged_its_hold_once() {
    let server = RedisServer::start();
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        mock: MockSettings {
            latency_ms: 1_500,
            ..MockSettings::default()
        },
        upstream_extra: "max-attempts = 3\ninitial-backoff-ms = 1\ntimeout-ms = 300",
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"timeout\"\n",
            server.url()
        ),
        ..Options::default()
    })
    .await;
    let code = call(&gw.sigv4_client(&acme), false, 50)
        .await
        .expect_err("the upstream timed out");
    assert_eq!(code, "ModelTimeoutException");
    let records = gw.wait_for_records(1).await;
    let state = gw.settled("acme").await;
    let record = &records[0];
    assert_eq!(
        (record.tollgate.status, record.tollgate.charged_from.as_str()),
        (504, "reservation")
    );
    assert!(record.tollgate.cost_nano_usd > 0);
    assert_eq!(record.tollgate.cost_nano_usd, record.tollgate.reserved_nano_usd);
    assert_eq!(state["spent-nano-usd"], record.tollgate.cost_nano_usd);
    assert_eq!(
        gw.mock.requests().len(),
        1,
        "a call that may have run is not sent again"
    );
    gw.reconcile().await;
}

//! One policy registry and one tenant directory for the fleet: a change
//! made through one replica's admin API decides on the others within a
//! second; a hundred swaps under load fail no call; a replica restarted
//! during a swap comes up on the version the fleet has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_bedrockruntime::Client;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate_host::upstream::mock::MockSettings;

use crate::admin_api::{active, admin, change_settings};
use crate::support::gateway::{ADMIN_TOKEN, Options, TenantSpec, TestGateway, call_model};
use crate::support::redis::RedisServer;

const NOVA_MICRO: &str = "amazon.nova-micro-v1:0";

/// A new version of acme's policy with this config, made on `gw`; its number.
async fn configure(gw: &TestGateway, config: Value) -> u64 {
    let (status, body) = change_settings(gw, config).await;
    assert_eq!(status, 200, "{body}");
    active(gw).await
}

/// Waits (by asking, no sleeping) until every replica has `number` active.
async fn converged(replicas: &[TestGateway], number: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for replica in replicas {
        while active(replica).await != number {
            assert!(Instant::now() < deadline, "a replica never reached version {number}");
        }
    }
}

async fn fleet(server: &RedisServer) -> Vec<TestGateway> {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(
            TestGateway::start(Options {
                tenants: vec![TenantSpec::new("acme", "scripted")],
                mock: MockSettings::default(),
                ledger_extra: format!(
                    "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"registry\"\n",
                    server.url()
                ),
                ..Options::default()
            })
            .await,
        );
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_on_one_replica_decides_on_all_within_a_second() {
    let server = RedisServer::start();
    let replicas = fleet(&server).await;
    let acme = TenantSpec::new("acme", "");
    let clients: Vec<Client> = replicas.iter().map(|r| r.sigv4_client(&acme)).collect();
    for client in &clients {
        call_model(client, NOVA_MICRO)
            .await
            .expect("admitted by the seeded version");
    }
    let first = active(&replicas[0]).await;
    for replica in &replicas[1..] {
        assert_eq!(active(replica).await, first, "one seeded version for the fleet");
    }

    let rejecting = configure(
        &replicas[0],
        json!({"action": "reject", "reason": "closed for the test"}),
    )
    .await;
    let changed = Instant::now();
    for client in &clients[1..] {
        // Calls back to back until the new version decides.
        let err = loop {
            match call_model(client, NOVA_MICRO).await {
                Ok(_) => assert!(changed.elapsed() < Duration::from_secs(5), "never switched"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.0, 403, "{err:?}");
    }
    let took = changed.elapsed();
    eprintln!("replicas 2 and 3 decided with the new version {took:?} after the change");
    assert!(
        took < Duration::from_secs(1),
        "replicas 2 and 3 decided with it after {took:?}"
    );
    converged(&replicas, rejecting).await;

    // Rolled back on replica 3: every replica admits again.
    let (status, body) = admin(&replicas[2], Method::POST, "/acme/policy/rollback", None).await;
    assert_eq!(status, 200, "{body}");
    converged(&replicas, first).await;
    call_model(&clients[0], NOVA_MICRO)
        .await
        .expect("admitted after the rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_swaps_under_load_fail_no_call_and_a_restarted_replica_catches_up() {
    let server = RedisServer::start();
    let mut replicas = fleet(&server).await;
    let a = configure(&replicas[0], json!({"reason": "version a"})).await;
    let b = configure(&replicas[1], json!({"reason": "version b"})).await;
    converged(&replicas, b).await;

    let acme = TenantSpec::new("acme", "");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut callers = Vec::new();
    for replica in &replicas {
        for _ in 0..2 {
            let client = replica.sigv4_client(&acme);
            let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
            callers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match call_model(&client, NOVA_MICRO).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("a call failed during the swaps: {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
    }
    for swap in 0..100u64 {
        let target = if swap % 2 == 0 { a } else { b };
        let (status, body) = admin(
            &replicas[(swap % 3) as usize],
            Method::POST,
            &format!("/acme/policy/versions/{target}/activate"),
            None,
        )
        .await;
        assert_eq!(status, 200, "swap {swap}: {body}");
    }
    converged(&replicas, b).await;
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed over 100 swaps");
    assert!(ok.load(Ordering::Relaxed) > 0);

    // Replica 3 restarts while replica 1 swaps: it comes up on the fleet's version.
    let (first, rest) = replicas.split_at_mut(1);
    let path = format!("/acme/policy/versions/{a}/activate");
    let (swapped, ()) = tokio::join!(admin(&first[0], Method::POST, &path, None), rest[1].restart());
    assert_eq!(swapped.0, 200, "{}", swapped.1);
    converged(&replicas, a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_keys_made_on_one_replica_work_on_the_others() {
    let server = RedisServer::start();
    let replicas = fleet(&server).await;
    let (status, body) = admin(
        &replicas[0],
        Method::POST,
        "",
        Some(json!({"tenant": "globex", "tier": "pro", "budget-usd": "10"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let wasm = crate::support::wasm("allow-all");
    let response = replicas[0]
        .raw()
        .post(format!("{}/admin/tenants/globex/policy", replicas[0].admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .body(wasm)
        .send()
        .await
        .expect("upload");
    assert_eq!(response.status(), 200);
    let (status, key) = admin(&replicas[0], Method::POST, "/globex/api-keys", None).await;
    assert_eq!(status, 201, "{key}");
    let secret = key["secret"].as_str().expect("secret");

    // The key made on replica 1 is accepted by replica 2 within a second.
    let made = Instant::now();
    let client = replicas[1].bearer_client_with(secret);
    while call_model(&client, NOVA_MICRO).await.is_err() {
        assert!(
            made.elapsed() < Duration::from_secs(5),
            "replica 2 never learnt the tenant"
        );
    }
    assert!(made.elapsed() < Duration::from_secs(1), "took {:?}", made.elapsed());

    // Replica 3 learns the key too.
    let client = replicas[2].bearer_client_with(secret);
    while call_model(&client, NOVA_MICRO).await.is_err() {
        assert!(
            made.elapsed() < Duration::from_secs(5),
            "replica 3 never learnt the tenant"
        );
    }

    // A budget changed on replica 2 is replica 3's budget too.
    let (status, body) = admin(
        &replicas[1],
        Method::PATCH,
        "/globex",
        Some(json!({"budget-usd": "0.000001"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();
    let refused = loop {
        match call_model(&client, NOVA_MICRO).await {
            Ok(_) => assert!(
                changed.elapsed() < Duration::from_secs(5),
                "the new budget never applied"
            ),
            Err(e) => break e,
        }
    };
    assert!(refused.1.contains("ServiceQuotaExceeded"), "{refused:?}");
    let (_, view) = admin(&replicas[2], Method::GET, "/globex", None).await;
    assert_eq!(view["budget-nano-usd"], 1_000u64, "{view}");
}

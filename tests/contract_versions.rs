//! Contract versions side by side. budget-guard as built against 0.1.0
//! (checked in: it was compiled before 0.2.0 existed) and its 0.2.0 rebuild
//! decide in the same `tollgate serve`, for different tenants, called with
//! the real AWS SDK; then each tenant is swapped to the other build through
//! the admin API while both keep calling, and no call fails.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::gateway::{ADMIN_TOKEN, Options, TenantSpec, TestGateway, call_model};
use support::*;
use tollgate_host::ContractVersion;

const FIXTURE: &str = "tests/fixtures/contract-0.1.0/budget_guard.wasm";
const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

fn old() -> TenantSpec {
    TenantSpec::new("old", FIXTURE)
}

fn new() -> TenantSpec {
    TenantSpec::new("new", "budget-guard")
}

async fn active(gw: &TestGateway, tenant: &str) -> Value {
    let response = gw
        .raw()
        .get(format!("{}/admin/tenants/{tenant}/policy", gw.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("admin answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

async fn upload(gw: &TestGateway, tenant: &str, wasm: Vec<u8>) {
    let form = Form::new().part("component", Part::bytes(wasm));
    let response = gw
        .raw()
        .post(format!("{}/admin/tenants/{tenant}/policy", gw.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .multipart(form)
        .send()
        .await
        .expect("admin answers");
    let status = response.status();
    let body = response.text().await.expect("body");
    assert!(status.is_success(), "upload to {tenant}: {status} {body}");
}

#[test]
fn the_fixture_is_a_0_1_component_and_the_rebuild_a_0_2_one() {
    let engine = engine();
    let fixture = engine.load_file(&repo().join(FIXTURE)).expect("0.1.0 loads");
    assert_eq!(fixture.contract(), ContractVersion::V0_1);
    let rebuilt = engine.load_file(&component("budget-guard")).expect("0.2.0 loads");
    assert_eq!(rebuilt.contract(), ContractVersion::V0_2);
    // Both decide the conformance cases the same way, through the host.
    let cases = tollgate_host::registry::cases::CasesFile::load(&conformance_cases("budget-guard")).expect("cases");
    for component in [fixture, rebuilt] {
        let version = tollgate_host::PolicyVersion::build(
            &engine,
            component,
            tenant("t"),
            1,
            tollgate_host::PolicySettings::default(),
            "test".into(),
        )
        .expect("version");
        let failed: Vec<String> = tollgate_host::registry::cases::run(&version, &cases)
            .iter()
            .filter(|o| !o.passed())
            .map(ToString::to_string)
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_1_component_and_its_0_2_rebuild_serve_side_by_side_and_swap() {
    let gw = TestGateway::start(Options {
        tenants: vec![old(), new()],
        ..Options::default()
    })
    .await;
    assert_eq!(active(&gw, "old").await["contract"], "0.1.0");
    assert_eq!(active(&gw, "new").await["contract"], "0.2.0");

    let clients = Arc::new([gw.sigv4_client(&old()), gw.sigv4_client(&new())]);
    for client in clients.iter() {
        call_model(client, HAIKU).await.expect("admitted");
    }

    // Both tenants keep calling while each is swapped to the other build.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|i| {
            let (clients, stop) = (Arc::clone(&clients), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut calls = 0u32;
                while !stop.load(Ordering::Acquire) || calls == 0 {
                    if let Err(e) = call_model(&clients[i], HAIKU).await {
                        panic!("a call failed during the swap: {e:?}");
                    }
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    upload(&gw, "old", wasm("budget-guard")).await;
    upload(&gw, "new", std::fs::read(repo().join(FIXTURE)).expect("fixture")).await;
    assert_eq!(active(&gw, "old").await["contract"], "0.2.0");
    assert_eq!(active(&gw, "new").await["contract"], "0.1.0");
    for client in clients.iter() {
        call_model(client, HAIKU).await.expect("admitted after the swap");
    }
    stop.store(true, Ordering::Release);
    for caller in callers {
        assert!(caller.await.expect("caller") > 0);
    }

    // Every call was decided by budget-guard, old build or new, on v1 or v2.
    gw.idle().await;
    let records = gw.records();
    for tenant in ["old", "new"] {
        let mine: Vec<_> = records.iter().filter(|r| r.tollgate.tenant == tenant).collect();
        assert!(mine.len() >= 3, "{tenant}: {} records", mine.len());
        for record in &mine {
            assert_eq!(
                record.tollgate.decision, "admit",
                "{tenant}: {}",
                record.tollgate.reason
            );
            assert!(record.tollgate.policy_failure.is_none(), "{record:?}");
            assert!(
                record.request_metadata.contains_key("budget-percent"),
                "{tenant}: {:?}",
                record.request_metadata
            );
        }
        let versions: std::collections::BTreeSet<_> =
            mine.iter().filter_map(|r| r.tollgate.policy_version.clone()).collect();
        assert_eq!(versions.len(), 2, "{tenant} decided on both builds: {versions:?}");
    }
    assert_eq!(gw.readyz().await.0, 200, "still healthy");
}

/// A fixed-offset zone where it is now 02:xx: outside business hours on any
/// day, whenever the test runs.
fn zone_at_two_in_the_morning() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let utc_hour = (now.as_secs() / 3600 % 24) as i32;
    let mut offset = (2 - utc_hour).rem_euclid(24);
    if offset > 11 {
        offset -= 24;
    }
    // POSIX signs: Etc/GMT-3 is three hours ahead of UTC.
    match offset {
        0 => "Etc/UTC".to_owned(),
        east => format!("Etc/GMT{:+}", -east),
    }
}

/// A gateway whose tenant `night` runs business-hours in a zone where it
/// is about two in the morning, with this downgrade chain; and the zone.
async fn at_two_in_the_morning(chain: &[&str]) -> (TestGateway, TenantSpec, String) {
    let zone = zone_at_two_in_the_morning();
    let extra = format!("time-zone = \"{zone}\"\npolicy-downgrade-chain = {chain:?}\n");
    let tenant = TenantSpec {
        extra: Box::leak(extra.into_boxed_str()),
        ..TenantSpec::new("night", "business-hours")
    };
    let gw = TestGateway::start(Options {
        tenants: vec![tenant.clone()],
        ..Options::default()
    })
    .await;
    (gw, tenant, zone)
}

/// Through the gateway, a 0.2.0 policy sees the tenant's wall clock (from
/// its configured zone) and the configured downgrade chain priced for the
/// call: business-hours moves an off-hours Sonnet call to the cheapest
/// model of the chain, and reports the local time it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_0_2_policy_sees_the_tenants_clock_and_the_priced_chain_through_the_gateway() {
    let (gw, tenant, zone) = at_two_in_the_morning(&[HAIKU, support::gateway::NOVA_MICRO, "acme.unpriced-model"]).await;
    let chain = &active(&gw, "night").await["settings"]["downgrade-chain"];
    assert_eq!(chain.as_array().map(Vec::len), Some(3), "{chain}");
    call_model(&gw.sigv4_client(&tenant), "anthropic.claude-sonnet-4-20250514-v1:0")
        .await
        .expect("admitted, downgraded");
    gw.idle().await;
    let records = gw.records();
    let record = records.last().expect("a record");
    assert_eq!(record.tollgate.decision, "downgrade", "{}", record.tollgate.reason);
    assert_eq!(
        record.tollgate.served_model_id.as_deref(),
        Some(support::gateway::NOVA_MICRO)
    );
    assert!(record.tollgate.reason.contains(&zone), "{}", record.tollgate.reason);
    let local = record.request_metadata["local-time"].as_str().expect("local-time");
    // 02:59 may turn 03:00 between the zone's choice and the call.
    assert!(local.starts_with("02:") || local == "03:00", "{local}");
    // What reached Bedrock names the cheaper model.
    let sent = gw.mock.requests();
    assert!(sent.last().expect("forwarded").model_id.contains("nova-micro"));
}

/// A shadow decides with its own version's downgrade chain. The active
/// version's chain is changed after the shadow is set (a settings change
/// makes a new active version and leaves the shadow as it was): the active
/// policy moves an off-hours Sonnet call to the new chain's model, and the
/// shadow, the same policy, to its own chain's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_sees_its_own_downgrade_chain_not_the_active_versions() {
    let (gw, tenant, _zone) = at_two_in_the_morning(&[HAIKU]).await;
    let policy = format!("{}/admin/tenants/night/policy", gw.admin_url);
    let shadow = gw
        .raw()
        .put(format!("{policy}/shadow"))
        .bearer_auth(ADMIN_TOKEN)
        .body(wasm("business-hours"))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(shadow.status(), 200, "{}", shadow.text().await.unwrap_or_default());
    let changed = gw
        .raw()
        .patch(format!("{policy}/settings"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "downgrade-chain": [support::gateway::NOVA_MICRO] }))
        .send()
        .await
        .expect("admin answers");
    assert_eq!(changed.status(), 200, "{}", changed.text().await.unwrap_or_default());

    call_model(&gw.sigv4_client(&tenant), "anthropic.claude-sonnet-4-20250514-v1:0")
        .await
        .expect("admitted, downgraded");
    gw.idle().await;
    let records = gw.records();
    let record = &records.last().expect("a record").tollgate;
    assert_eq!(record.decision, "downgrade", "{}", record.reason);
    assert_eq!(record.served_model_id.as_deref(), Some(support::gateway::NOVA_MICRO));
    let shadow = record.shadow.as_ref().expect("the shadow's verdict");
    assert_eq!(shadow.decision, "downgrade", "{shadow:?}");
    assert_eq!(shadow.downgrade_to.as_deref(), Some(HAIKU), "{shadow:?}");
    assert!(!shadow.agrees, "{shadow:?}");
}

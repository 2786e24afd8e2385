//! Tenants created and changed at runtime through the admin API, over HTTPS,
//! while they call with the real AWS SDK: a new tenant's keys work at once,
//! a budget change applies to the next call, revoked keys and disabled
//! tenants are refused, bad bodies name their field, and a restart keeps it all.

use crate::support::gateway::{ADMIN_TOKEN, NOVA_MICRO, Options, TenantSpec, TestGateway, call_model};
use crate::support::wasm;
use serde_json::{Value, json};

async fn admin(
    gw: &TestGateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    wasm_body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut request = gw
        .raw()
        .request(method, format!("{}/admin/tenants{path}", gw.admin_url))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(bytes) = wasm_body {
        request = request.body(bytes);
    }
    let response = request.send().await.expect("admin API answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_created_at_runtime_calls_at_once_and_its_changes_survive_a_restart() {
    use reqwest::Method;
    let mut gw = TestGateway::start(Options {
        tenants: vec![TenantSpec::new("acme", "allow-all")],
        https: true,
        ..Options::default()
    })
    .await;

    // Bad bodies are refused with the field named; nothing is created.
    let (status, body) = admin(
        &gw,
        Method::POST,
        "",
        Some(json!({"tenant": "globex", "budgt": "5"})),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().expect("message").contains("budgt"), "{body}");
    let (status, body) = admin(
        &gw,
        Method::POST,
        "",
        Some(json!({"tenant": "globex", "budget-usd": 0.5})),
        None,
    )
    .await;
    assert_eq!(status, 400, "money is never a float: {body}");
    assert_eq!(admin(&gw, Method::GET, "/globex", None, None).await.0, 404);

    let (status, body) = admin(
        &gw,
        Method::POST,
        "",
        Some(json!({"tenant": "globex", "tier": "pro", "budget-usd": "10", "rpm": 1000})),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["budget-nano-usd"], 10_000_000_000u64);
    let (status, _) = admin(
        &gw,
        Method::POST,
        "",
        Some(json!({"tenant": "globex", "budget-usd": "1"})),
        None,
    )
    .await;
    assert_eq!(status, 409, "a tenant is created once");
    let (status, body) = admin(&gw, Method::POST, "/globex/policy", None, Some(wasm("allow-all"))).await;
    assert_eq!(status, 200, "{body}");

    // Its keys work at once, over bearer and over SigV4.
    let (status, bearer) = admin(&gw, Method::POST, "/globex/api-keys", None, None).await;
    assert_eq!(status, 201, "{bearer}");
    let (status, access) = admin(&gw, Method::POST, "/globex/access-keys", None, None).await;
    assert_eq!(status, 201, "{access}");
    let bearer_client = gw.bearer_client_with(bearer["secret"].as_str().expect("key"));
    let sigv4_client = gw.sigv4_client_with(
        access["id"].as_str().expect("id"),
        access["secret"].as_str().expect("secret"),
    );
    call_model(&bearer_client, NOVA_MICRO).await.expect("bearer key works");
    call_model(&sigv4_client, NOVA_MICRO).await.expect("access key works");
    let (_, keys) = admin(&gw, Method::GET, "/globex/keys", None, None).await;
    assert_eq!(keys["api-keys"][0]["id"], bearer["id"]);
    assert!(
        !keys.to_string().contains(access["secret"].as_str().expect("secret")),
        "{keys}"
    );

    // A budget change applies to the next call.
    let (status, body) = admin(
        &gw,
        Method::PATCH,
        "/globex",
        Some(json!({"budget-usd": "0.000001"})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let refused = call_model(&sigv4_client, NOVA_MICRO)
        .await
        .expect_err("over the new budget");
    assert_eq!(refused.0, 400, "{refused:?}");
    let (status, body) = admin(
        &gw,
        Method::PATCH,
        "/globex",
        Some(json!({"budget-usd": "10", "rpm": null})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    call_model(&sigv4_client, NOVA_MICRO)
        .await
        .expect("within budget again");
    let (status, body) = admin(&gw, Method::PATCH, "/globex", Some(json!({"rpm": "many"})), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().expect("message").contains("rpm") || body.to_string().contains("invalid type"));
    assert_eq!(
        admin(&gw, Method::PATCH, "/nobody", Some(json!({"tier": "pro"})), None)
            .await
            .0,
        404
    );

    // Disabled, it is refused; enabled, it calls again.
    admin(&gw, Method::PATCH, "/globex", Some(json!({"disabled": true})), None).await;
    let refused = call_model(&sigv4_client, NOVA_MICRO).await.expect_err("disabled");
    assert_eq!(refused, (403, "AccessDeniedException".to_owned()));
    admin(&gw, Method::PATCH, "/globex", Some(json!({"disabled": false})), None).await;
    call_model(&sigv4_client, NOVA_MICRO).await.expect("enabled again");

    // A revoked key is refused at once; the other still works.
    let path = format!("/globex/api-keys/{}", bearer["id"].as_str().expect("id"));
    assert_eq!(admin(&gw, Method::DELETE, &path, None, None).await.0, 200);
    assert_eq!(admin(&gw, Method::DELETE, &path, None, None).await.0, 404);
    let refused = call_model(&bearer_client, NOVA_MICRO).await.expect_err("revoked");
    assert_eq!(refused.0, 403, "{refused:?}");

    // Killed and started again: the tenant, its policy, key and budget are
    // back. Every call's record is on disk first: a SIGKILL may lose the
    // records still queued (about 2 ms of them; the ledger, not the log,
    // holds the money), and the whole log is reconciled below.
    gw.idle().await;
    gw.restart().await;
    let sigv4_client = gw.sigv4_client_with(
        access["id"].as_str().expect("id"),
        access["secret"].as_str().expect("secret"),
    );
    call_model(&sigv4_client, NOVA_MICRO)
        .await
        .expect("the runtime tenant survived");
    let bearer_client = gw.bearer_client_with(bearer["secret"].as_str().expect("key"));
    assert_eq!(
        call_model(&bearer_client, NOVA_MICRO)
            .await
            .expect_err("still revoked")
            .0,
        403
    );
    let (_, globex) = admin(&gw, Method::GET, "/globex", None, None).await;
    assert_eq!(globex["budget-nano-usd"], 10_000_000_000u64, "{globex}");
    assert!(
        globex["spent-nano-usd"].as_u64().expect("spent") > 0,
        "its books are kept: {globex}"
    );
    gw.reconcile().await;
}

//! The admin API's tenant routes as the fleet tests call them.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::gateway::{ADMIN_TOKEN, TestGateway};

/// `method` on `/admin/tenants{path}`: the status and the JSON answered.
pub async fn admin(gw: &TestGateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = gw
        .raw()
        .request(method, format!("{}/admin/tenants{path}", gw.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-tollgate-actor", "fleet-test");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin API answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The number of acme's active policy version.
pub async fn active(gw: &TestGateway) -> u64 {
    let (status, body) = admin(gw, Method::GET, "/acme/policy", None).await;
    assert_eq!(status, 200, "{body}");
    body["number"].as_u64().expect("number")
}

/// Asks for a new version of acme's policy with this config.
pub async fn change_settings(gw: &TestGateway, config: Value) -> (u16, Value) {
    admin(
        gw,
        Method::PATCH,
        "/acme/policy/settings",
        Some(json!({ "config": config })),
    )
    .await
}

/// acme's spend (nano-dollars) and calls, once nothing is open.
pub async fn spent(gw: &TestGateway) -> (u64, u64) {
    let state = gw.settled("acme").await;
    (
        state["spent-nano-usd"].as_u64().expect("spent"),
        state["calls-all-periods"].as_u64().expect("calls"),
    )
}

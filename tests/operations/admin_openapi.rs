//! The published OpenAPI description of the admin API matches the routes a
//! running gateway serves: every documented operation exists (and wants the
//! token), no other method answers on a documented path, every route in
//! the source is documented, and the gateway serves the same document.

use std::collections::BTreeSet;

use crate::support::gateway::{ADMIN_TOKEN, Options, TenantSpec, TestGateway};
use crate::support::repo;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn description() -> Value {
    let path = repo().join("docs/admin-api.openapi.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read the description")).expect("JSON")
}

/// A concrete URL path for a templated one.
fn concrete(path: &str) -> String {
    path.replace("{tenant}", "acme")
        .replace("{id}", "key-000000000000")
        .replace("{number}", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_matches_the_routes() {
    let doc = description();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let gw = TestGateway::start(Options {
        tenants: vec![TenantSpec::new("acme", "allow-all")],
        ..Options::default()
    })
    .await;
    let client = gw.raw();
    for (path, item) in paths {
        let documented: BTreeSet<&str> = item
            .as_object()
            .expect("operations")
            .keys()
            .map(String::as_str)
            .collect();
        for method in METHODS {
            let url = format!("{}{}", gw.admin_url, concrete(path));
            let request = client.request(method.to_uppercase().parse().expect("method"), &url);
            let status = request.send().await.expect("answers").status().as_u16();
            if documented.contains(method) {
                assert_eq!(
                    status, 401,
                    "{method} {path} is documented: it must exist and want the token"
                );
                assert!(
                    item[method]["responses"]["401"].is_object(),
                    "{method} {path}: document the 401"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented, so it must not answer");
            }
        }
    }

    // Every route the admin API declares is documented, and no more.
    let source: String = ["host/src/gateway/admin.rs"]
        .iter()
        .map(|file| std::fs::read_to_string(repo().join(file)).expect("source"))
        .collect();
    let routed: BTreeSet<String> = source
        .split(".route(")
        .skip(1)
        .filter_map(|rest| rest.trim_start().strip_prefix('"'))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    assert_eq!(routed, documented, "routes and the description differ");

    // The gateway serves the same description.
    let served: Value = client
        .get(format!("{}/admin/openapi.json", gw.admin_url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(served, doc);
}

//! Replicas behind one load balancer share the dashboard's sign-ins: a
//! session opened on one replica opens the page on another, signing out on
//! one signs out on all, and with Redis away a session cookie is answered
//! 503 (the admin token still works) while the replica keeps serving.

use reqwest::StatusCode;

use crate::support::gateway::{ADMIN_TOKEN, Options, TenantSpec, TestGateway};
use crate::support::redis::RedisServer;

async fn replica(server: &RedisServer) -> TestGateway {
    TestGateway::start(Options {
        tenants: vec![TenantSpec::new("acme", "allow-all")],
        ledger_extra: format!(
            "store = \"redis\"\n[ledger.redis]\nurl = \"{}\"\nkey-prefix = \"sessions\"\ntimeout-ms = 200\n",
            server.url()
        ),
        ..Options::default()
    })
    .await
}

/// Signs in with the admin token on `gw`; the session cookie it set.
async fn sign_in(gw: &TestGateway) -> String {
    let response = browser()
        .post(format!("{}/admin/dashboard/session", gw.admin_url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"].to_str().expect("text");
    cookie.split(';').next().expect("name=value").to_owned()
}

/// Sees the sign-in's redirect rather than following it.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn page(gw: &TestGateway, cookie: &str) -> (StatusCode, String) {
    let response = gw
        .raw()
        .get(format!("{}/admin/dashboard", gw.admin_url))
        .header("cookie", cookie)
        .send()
        .await
        .expect("answers");
    (response.status(), response.text().await.expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_opened_on_one_replica_holds_on_every_replica() {
    let mut server = RedisServer::start();
    let (a, b) = (replica(&server).await, replica(&server).await);

    let cookie = sign_in(&a).await;
    let (status, body) = page(&b, &cookie).await;
    assert_eq!(status, StatusCode::OK, "opened on a, so the page opens on b: {body}");
    assert!(body.contains("data-tenants"), "{body}");
    let data = b
        .raw()
        .get(format!("{}/admin/dashboard/data", b.admin_url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("answers");
    assert_eq!(data.status(), StatusCode::OK);

    // Signed out on b: closed on a as well.
    let out = b
        .raw()
        .delete(format!("{}/admin/dashboard/session", b.admin_url))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("answers");
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let (status, body) = page(&a, &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed out on b: {body}");
    assert!(body.contains("data-sign-in"), "{body}");

    // Redis away: the cookie cannot be checked, so 503 with why, not a
    // wrong-token answer; the admin token still opens the page.
    let cookie = sign_in(&a).await;
    server.kill();
    let (status, body) = page(&b, &cookie).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("Redis, which does not answer"), "{body}");
    let with_token = b
        .raw()
        .get(format!("{}/admin/dashboard", b.admin_url))
        .header("cookie", &cookie)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers");
    assert_eq!(with_token.status(), StatusCode::OK);
    let refused = browser()
        .post(format!("{}/admin/dashboard/session", a.admin_url))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().get("set-cookie").is_none(), "no session was opened");
    assert_eq!(a.healthz().await, 200);
    assert_eq!(b.healthz().await, 200);

    // Back: the session opened before the outage holds again (Redis kept it on disk).
    server.restart();
    let (status, body) = page(&b, &cookie).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

//! The dashboard in a real headless Chromium: the real `tollgate serve`
//! with two tenants, calls from the real AWS SDK, sign-in through the form,
//! every tenant shown with its alert level, live updates after new traffic,
//! and a screenshot. Plus the refusals over plain HTTP.
//!
//! `TOLLGATE_UPDATE_SCREENSHOT=1` writes the screenshot to `docs/dashboard.png`.

mod support;

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, InferenceConfiguration, Message};
use serde_json::Value;
use support::chromium::Chromium;
use support::gateway::{ADMIN_TOKEN, Options, TenantSpec, TestGateway};

const SONNET: &str = "anthropic.claude-sonnet-4-20250514-v1:0";
const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
const USERS: [&str; 5] = [
    "ana@example.com",
    "bo@example.com",
    "chen@example.com",
    "dee@example.com",
    "eli@example.com",
];
const USE_CASES: [&str; 3] = ["summaries", "chat", "search"];

fn tenants() -> Vec<TenantSpec> {
    vec![
        // A small budget that a few calls push through every level.
        TenantSpec {
            budget_usd: "0.03",
            policy_config: "downgrade-at-percent = 40\nreject-at-percent = 100\n",
            ..TenantSpec::new("acme", "budget-guard")
        },
        TenantSpec {
            tier: "free",
            budget_usd: "5",
            extra: "rpm = 20\nincluded-tokens = 60000\n",
            policy_config: "free-max-output-tokens = 256\n",
            ..TenantSpec::new("globex", "tiered")
        },
    ]
}

/// `n` calls, users and use cases taking turns; the verdicts do not matter here.
async fn traffic(client: &Client, model: &str, n: usize, offset: usize) {
    for i in offset..offset + n {
        let message = Message::builder()
            .role(ConversationRole::User)
            .content(ContentBlock::Text(
                "Summarise this support ticket in two sentences and suggest a next step".into(),
            ))
            .build()
            .expect("message");
        let _ = client
            .converse()
            .model_id(model)
            .messages(message)
            .inference_config(InferenceConfiguration::builder().max_tokens(400).build())
            .request_metadata("user", USERS[(i * i + i / 3) % USERS.len()])
            .request_metadata("use-case", USE_CASES[i % USE_CASES.len()])
            .send()
            .await;
    }
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    (word(16), word(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_signs_in_shows_every_tenant_and_updates_live() {
    let specs = tenants();
    let gw = TestGateway::start(Options {
        tenants: specs.clone(),
        ..Options::default()
    })
    .await;
    let acme = gw.sigv4_client(&specs[0]);
    let globex = gw.sigv4_client(&specs[1]);
    traffic(&acme, SONNET, 120, 0).await;
    traffic(&globex, HAIKU, 30, 0).await;
    gw.idle().await;

    // Over plain HTTP: no session, no page and no data.
    let http = gw.raw();
    let page = format!("{}/admin/dashboard", gw.admin_url);
    let data = format!("{}/admin/dashboard/data", gw.admin_url);
    let response = http.get(&page).send().await.expect("answers");
    assert_eq!(response.status(), 401);
    let headers = response.headers().clone();
    let csp = headers["content-security-policy"].to_str().expect("text");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let body = response.text().await.expect("text");
    assert!(
        body.contains("data-sign-in") && !body.contains("data-tenants"),
        "{body}"
    );
    assert_eq!(http.get(&data).send().await.expect("answers").status(), 401);
    let forged = http
        .get(&data)
        .header("cookie", format!("tollgate_dashboard={}", "ab".repeat(32)))
        .send()
        .await
        .expect("answers");
    assert_eq!(forged.status(), 401, "a cookie the gateway never issued opens nothing");
    let wrong = http
        .post(format!("{}/admin/dashboard/session", gw.admin_url))
        .form(&[("token", "not-the-admin-token-at-all")])
        .send()
        .await
        .expect("answers");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.expect("text").contains("not the admin token"));
    let cross_site = http
        .post(format!("{}/admin/dashboard/session", gw.admin_url))
        .header("origin", "https://evil.example")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .expect("answers");
    assert_eq!(cross_site.status(), 403, "a form from another site does not sign in");
    // The token as a bearer header reads the data, as scripts do.
    let snapshot: Value = http
        .get(&data)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(snapshot["tenants"].as_array().map(Vec::len), Some(2), "{snapshot}");

    // In the browser: the sign-in form refuses a wrong token, then takes the right one.
    let levels: Vec<(String, String)> = {
        let mut levels = Vec::new();
        for spec in &specs {
            let state = gw.tenant_state(spec.id).await;
            levels.push((spec.id.to_owned(), state["alert"].as_str().expect("alert").to_owned()));
        }
        levels
    };
    assert_ne!(levels[0].1, "green", "acme's small budget raised its level: {levels:?}");
    let admin_url = gw.admin_url.clone();
    let browser = tokio::task::spawn_blocking(move || {
        let browser = Chromium::launch(1280, 900);
        browser.open(&format!("{admin_url}/admin/dashboard"));
        browser.submit_token("not-the-admin-token-at-all");
        let error = browser.wait_for(
            "the form says why a wrong token is refused",
            "(document.querySelector('[data-error]') || {}).textContent",
            Duration::from_secs(20),
        );
        assert!(
            error.as_str().is_some_and(|e| e.contains("not the admin token")),
            "{error}"
        );
        browser.sign_in(ADMIN_TOKEN, 2);
        browser
    })
    .await
    .expect("browser task");
    let browser = std::sync::Arc::new(browser);

    // Every tenant with its alert level, as the admin API has it.
    let on_page = |b: &Chromium, tenant: &str, attribute: &str| {
        b.eval(&format!(
            "document.querySelector('tr[data-tenant=\"{tenant}\"]').getAttribute('{attribute}')"
        ))
    };
    for (tenant, level) in &levels {
        let shown = on_page(&browser, tenant, "data-level");
        assert_eq!(shown.as_str(), Some(level.as_str()), "{tenant}'s level on the page");
        let badge = browser.eval(&format!(
            "document.querySelector('tr[data-tenant=\"{tenant}\"] .level').textContent"
        ));
        assert_eq!(badge.as_str(), Some(level.as_str()));
    }
    let aggregate =
        browser.eval("document.querySelector('[data-aggregate-level]').getAttribute('data-aggregate-level')");
    assert!(
        ["green", "yellow", "orange", "red"].contains(&aggregate.as_str().unwrap_or("")),
        "{aggregate}"
    );
    // The detail view follows a click, with the tenant's top users and use cases.
    browser.eval("document.querySelector('tr[data-tenant=\"globex\"]').click()");
    browser.wait_for(
        "globex's detail view",
        "document.querySelector('[data-detail]').getAttribute('data-detail-tenant') === 'globex' && \
         document.querySelectorAll('[data-top=\"users\"] .bar-row').length >= 3 && \
         document.querySelectorAll('[data-top=\"use-cases\"] .bar-row').length >= 3",
        Duration::from_secs(20),
    );
    assert!(
        browser
            .eval("document.querySelectorAll('[data-alert]').length")
            .as_u64()
            > Some(0)
    );
    assert!(
        browser
            .eval("document.querySelectorAll('[data-policy]').length")
            .as_u64()
            >= Some(2)
    );

    // New traffic shows without a reload.
    // Throttled or not, every call is counted in its minute.
    let before: u64 = on_page(&browser, "globex", "data-calls")
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("globex's calls on the page");
    assert!(before >= 30, "{before}");
    traffic(&globex, HAIKU, 5, 30).await;
    gw.idle().await;
    let b = std::sync::Arc::clone(&browser);
    tokio::task::spawn_blocking(move || {
        b.wait_for(
            "the page shows globex's new calls",
            &format!(
                "Number(document.querySelector('tr[data-tenant=\"globex\"]').getAttribute('data-calls')) >= {}",
                before + 5
            ),
            Duration::from_secs(20),
        );
        // Back to the tenant closest to its budget, over a shorter window, for the picture.
        b.eval("location.hash = 'tenant=acme'");
        b.eval(
            "const w = document.querySelector('[data-window]'); w.value = '15'; w.dispatchEvent(new Event('change'))",
        );
        b.wait_for(
            "acme's detail view over 15 minutes",
            "document.querySelector('[data-detail]').getAttribute('data-detail-tenant') === 'acme' && \
             document.body.getAttribute('data-minutes') === '15'",
            Duration::from_secs(20),
        );
    })
    .await
    .expect("browser task");

    let png = browser.screenshot();
    assert!(is_png(&png), "a PNG");
    assert_eq!(png_size(&png), (1280, 900));
    assert!(
        png.len() > 30_000,
        "a picture of a drawn page, not a blank one: {} bytes",
        png.len()
    );
    let target = if std::env::var_os("TOLLGATE_UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        support::repo().join("docs/dashboard.png")
    } else {
        gw.dir().join("dashboard.png")
    };
    std::fs::write(&target, &png).expect("write the screenshot");
}

//! A tenant's policy lifecycle through the admin API, over HTTP, while the
//! tenant calls with the real AWS SDK: an upload whose cases fail changes
//! nothing; a shadow decides beside the active version without changing a
//! verdict, and its disagreements and money are counted exactly; promote,
//! roll back and activate by number.

use crate::support::gateway::{ADMIN_TOKEN, NOVA_MICRO, Options, TenantSpec, TestGateway, call_model};
use crate::support::wasm;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// A free-tier tenant on allow-all: the tiered policy would move its
/// non-free calls to the free model, so the two disagree on exactly those.
fn acme() -> TenantSpec {
    TenantSpec {
        tier: "free",
        extra: "included-tokens = 100000000\n",
        ..TenantSpec::new("acme", "allow-all")
    }
}

struct Admin<'a> {
    gw: &'a TestGateway,
}

impl Admin<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/admin/tenants/acme/policy{path}", self.gw.admin_url)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request
            .bearer_auth(ADMIN_TOKEN)
            .header("x-tollgate-actor", "release-bot")
            .send()
            .await
            .expect("admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.gw.raw().get(self.url(path))).await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        self.send(self.gw.raw().post(self.url(path))).await
    }

    async fn active(&self) -> u64 {
        let (status, body) = self.get("").await;
        assert_eq!(status, 200, "{body}");
        body["number"].as_u64().expect("number")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_pass_their_cases_and_a_shadow_is_counted_then_promoted_and_rolled_back() {
    let gw = TestGateway::start(Options {
        tenants: vec![acme()],
        ..Options::default()
    })
    .await;
    let admin = Admin { gw: &gw };
    let client = gw.sigv4_client(&acme());
    assert_eq!(admin.active().await, 1);

    // Without the token, or with a wrong one, nothing answers but 401.
    for (method, path) in [
        (reqwest::Method::GET, "/versions"),
        (reqwest::Method::PUT, "/shadow"),
        (reqwest::Method::POST, "/promote"),
        (reqwest::Method::POST, "/versions/1/activate"),
    ] {
        let url = admin.url(path);
        let bare = gw.raw().request(method.clone(), &url).send().await.expect("answers");
        assert_eq!(bare.status(), 401, "{path}");
        let wrong = gw
            .raw()
            .request(method, &url)
            .bearer_auth("not-the-admin-token-at-all")
            .send()
            .await
            .expect("answers");
        assert_eq!(wrong.status(), 401, "{path}");
    }

    // An upload whose cases fail is refused, and nothing changes.
    let failing = "[[case]]\nname = \"sonnet is refused\"\nexpect = { action = \"reject\" }\n";
    let form = Form::new()
        .part("component", Part::bytes(wasm("allow-all")))
        .text("cases", failing);
    let (status, body) = admin.send(gw.raw().post(admin.url("")).multipart(form)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().expect("message").contains("failed 1 of 1"),
        "{body}"
    );
    assert_eq!(admin.active().await, 1);
    let form = Form::new()
        .part("component", Part::bytes(wasm("allow-all")))
        .text("kases", "");
    let (status, body) = admin.send(gw.raw().post(admin.url("")).multipart(form)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("unknown part `kases`"),
        "{body}"
    );

    // The tiered policy shadows allow-all.
    let (status, body) = admin
        .send(gw.raw().put(admin.url("/shadow")).body(wasm("tiered")))
        .await;
    assert_eq!(status, 200, "{body}");
    let shadow = body["shadow"].as_str().expect("shadow version").to_owned();
    assert_eq!(admin.active().await, 1, "a shadow changes no enforced verdict");

    // Under load, 8 callers at once: a third of the calls on a model the
    // shadow would move to the free one, the rest on the free model.
    let calls = 30;
    let callers: Vec<_> = (0..8)
        .map(|caller| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (caller..calls).step_by(8) {
                    let model = if i % 3 == 0 { HAIKU } else { NOVA_MICRO };
                    call_model(&client, model).await.expect("admitted by the active policy");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    let records = gw.wait_for_records(calls).await;
    assert_eq!(records.len(), calls);
    let (mut actual, mut would, mut shadowed, mut disagreed) = (0u64, 0u64, 0u64, 0u64);
    for record in &records {
        assert_eq!(record.tollgate.decision, "admit", "the active verdict is enforced");
        let fields = record
            .tollgate
            .shadow
            .as_ref()
            .expect("the shadow's verdict is in the record");
        assert_eq!(fields.policy_version, shadow);
        if fields.decision == "skipped" {
            continue;
        }
        shadowed += 1;
        let on_haiku = record.tollgate.requested_model_id == HAIKU;
        assert_eq!(fields.agrees, !on_haiku, "{fields:?}");
        disagreed += u64::from(on_haiku);
        let expected = if on_haiku { "downgrade" } else { "admit" };
        assert_eq!(fields.decision, expected);
        let cost = fields.cost_nano_usd.expect("priced from the call's usage");
        if on_haiku {
            assert_eq!(fields.downgrade_to.as_deref(), Some(NOVA_MICRO));
            assert!(cost < record.tollgate.cost_nano_usd, "the free model costs less");
        } else {
            assert_eq!(cost, record.tollgate.cost_nano_usd);
        }
        actual += record.tollgate.cost_nano_usd;
        would += cost;
    }
    assert!(shadowed >= 20, "only {shadowed} of {calls} calls were shadowed");
    let (status, report) = admin.get("/shadow").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["calls"], shadowed, "{report}");
    assert_eq!(report["skipped"], calls as u64 - shadowed, "{report}");
    assert_eq!(report["disagreed"], disagreed, "{report}");
    assert_eq!(report["pairs"][0]["active"], "admit");
    assert_eq!(report["pairs"][0]["shadow"], format!("downgrade:{NOVA_MICRO}"));
    assert_eq!(report["actual-spend-nano-usd"], actual, "{report}");
    assert_eq!(report["shadow-spend-nano-usd"], would, "{report}");
    assert_eq!(report["shadow-delta-nano-usd"], would as i64 - actual as i64);
    let metrics = gw.metrics().await;
    let disagreements = metrics
        .lines()
        .find(|l| l.starts_with("tollgate_shadow_disagreements_total{"))
        .unwrap_or_else(|| panic!("no disagreement series:\n{metrics}"));
    assert!(disagreements.ends_with(&format!(" {disagreed}")), "{disagreements}");
    assert!(disagreements.contains("shadow=\"downgrade\""), "{disagreements}");

    // Promoted in one call: the next non-free call is moved to the free model.
    let (status, body) = admin.post("/promote").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["activated"], shadow.as_str());
    assert_eq!(admin.get("/shadow").await.0, 409, "no shadow any more");
    call_model(&client, HAIKU).await.expect("downgraded");
    let records = gw.wait_for_records(calls + 1).await;
    assert_eq!(records[calls].tollgate.decision, "downgrade");
    assert!(records[calls].tollgate.shadow.is_none());

    // Rolled back, then activated again by number.
    let (status, body) = admin.post("/rollback").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(admin.active().await, 1);
    call_model(&client, HAIKU).await.expect("admitted");
    assert_eq!(
        gw.wait_for_records(calls + 2).await[calls + 1].tollgate.decision,
        "admit"
    );
    let number = shadow.rsplit("@v").next().expect("number");
    assert_eq!(admin.post(&format!("/versions/{number}/activate")).await.0, 200);
    assert_eq!(admin.post("/versions/99/activate").await.0, 404);
    // A kept version made the shadow by number, then cleared.
    let (status, body) = admin.send(gw.raw().put(admin.url("/shadow?version=1"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["shadow"], "acme@v1", "{body}");
    assert_eq!(admin.send(gw.raw().delete(admin.url("/shadow"))).await.0, 200);

    // Every kept version, with who uploaded it.
    let (status, versions) = admin.get("/versions").await;
    assert_eq!(status, 200, "{versions}");
    let versions = versions.as_array().expect("a list");
    assert_eq!(versions.len(), 2, "the refused upload was not kept: {versions:?}");
    assert_eq!(versions[1]["source"], "admin upload by release-bot");
    assert_eq!(versions[1]["active"], true);
    assert_eq!(versions[0]["active"], false);
    gw.reconcile().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_policy_changes_survive_a_restart_until_the_file_changes() {
    let mut gw = TestGateway::start(Options {
        tenants: vec![acme()],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme());
    {
        let admin = Admin { gw: &gw };
        let (status, body) = admin.send(gw.raw().post(admin.url("")).body(wasm("tiered"))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["activated"], "acme@v2");
        let (status, body) = admin
            .send(gw.raw().put(admin.url("/shadow")).body(wasm("budget-guard")))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // Killed without a chance to flush: what was acknowledged is kept.
    gw.restart().await;
    let admin = Admin { gw: &gw };
    assert_eq!(admin.active().await, 2, "the upload survived the restart");
    let (status, report) = admin.get("/shadow").await;
    assert_eq!(status, 200, "the shadow survived too: {report}");
    assert_eq!(report["shadow-version"], "acme@v3");
    let (_, versions) = admin.get("/versions").await;
    let sources: Vec<&str> = versions
        .as_array()
        .expect("list")
        .iter()
        .map(|v| v["source"].as_str().expect("source"))
        .collect();
    assert_eq!(sources.len(), 3, "{versions}");
    assert_eq!(&sources[1..], ["admin upload by release-bot"; 2]);
    let new_client = gw.sigv4_client(&acme());
    call_model(&new_client, HAIKU).await.expect("served");
    let records = gw.wait_for_records(1).await;
    let last = records.last().expect("a record");
    assert_eq!(last.tollgate.decision, "downgrade", "tiered decides after the restart");
    assert_eq!(last.tollgate.policy_version.as_deref(), Some("acme@v2"));

    // Rolled back at runtime, still rolled back after a restart.
    assert_eq!(admin.post("/rollback").await.0, 200);
    gw.restart().await;
    let admin = Admin { gw: &gw };
    assert_eq!(admin.active().await, 1);

    // Editing the configured policy is a deploy: it becomes a new version.
    let config = gw.dir().join("tollgate.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("deadline-ms = 200", "deadline-ms = 250")).expect("edit config");
    gw.restart().await;
    let admin = Admin { gw: &gw };
    let (_, active) = admin.get("").await;
    assert_eq!(active["number"], 4, "{active}");
    assert_eq!(active["settings"]["deadline-ms"], 250, "{active}");
    drop(client);
}

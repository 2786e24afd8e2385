//! A tenant's uploads cost bounded memory: versions beyond the kept 16 are
//! dropped, and versions that are neither active nor shadowing keep no warm
//! instances. Measured on the real gateway process, through the admin API,
//! with calls deciding between uploads: once the tenant's 16 kept versions
//! exist, 100 more uploads leave resident memory within 10 %.

use crate::support::gateway::{ADMIN_TOKEN, NOVA_MICRO, Options, TenantSpec, TestGateway, call_model};
use crate::support::wasm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_more_uploads_leave_memory_within_ten_percent() {
    let acme = TenantSpec::new("acme", "allow-all");
    let gw = TestGateway::start(Options {
        tenants: vec![acme.clone()],
        ..Options::default()
    })
    .await;
    let client = gw.sigv4_client(&acme);
    let components = [
        wasm("tiered"),
        wasm("budget-guard"),
        wasm("allow-all"),
        wasm("forecast-guard"),
    ];
    let upload = |i: usize| {
        let request = gw
            .raw()
            .post(format!("{}/admin/tenants/acme/policy", gw.admin_url))
            .bearer_auth(ADMIN_TOKEN)
            .body(components[i % components.len()].clone());
        async move {
            let response = request.send().await.expect("admin API answers");
            assert_eq!(response.status(), 200, "{:?}", response.text().await);
        }
    };
    // The first round fills the kept versions, each component warm once.
    for i in 0..tollgate_host::registry::KEEP_VERSIONS {
        upload(i).await;
        call_model(&client, NOVA_MICRO).await.expect("served");
    }
    gw.settled("acme").await;
    let first = gw.rss_bytes();
    for i in 0..100 {
        upload(i).await;
        call_model(&client, NOVA_MICRO).await.expect("served");
    }
    gw.settled("acme").await;
    let last = gw.rss_bytes();
    println!("resident memory: {first} bytes once 16 versions are kept, {last} after 100 more uploads");
    assert!(
        last <= first + first / 10,
        "memory grew from {first} to {last} bytes over 100 uploads"
    );
}

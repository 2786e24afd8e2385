//! The AWS SDK a service already uses, with tollgate in process: the
//! service keeps calling `client.converse()`, and each call is decided by
//! the tenant's policy, reserved, forwarded with merged `requestMetadata`
//! and settled, with no second network hop. Throttles and rejects arrive as
//! the SDK's own error types. The upstream here is the built-in mock
//! Bedrock, so no AWS account is needed.
//!
//! ```sh
//! cargo run --release -- policy build policies
//! cargo run -p tollgate-host --example sdk_interceptor -- policies/target/components/budget_guard.wasm
//! ```

use aws_sdk_bedrockruntime::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::types::{ContentBlock, ConversationRole, Message};
use aws_sdk_bedrockruntime::{Client, Config};
use tollgate_host::TenantId;
use tollgate_host::config::Config as TollgateConfig;
use tollgate_host::gateway::app;
use tollgate_host::sdk::InProcess;

const SONNET: &str = "anthropic.claude-sonnet-4-20250514-v1:0";

fn tollgate_toml(policy: &str) -> String {
    let tenant = |id: &str, budget: &str, extra: &str, config: &str| {
        format!(
            "[tenants.{id}]\nbudget-usd = \"{budget}\"\npolicy = {policy:?}\n{extra}\n[tenants.{id}.policy-config]\n{config}\n\n"
        )
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nplain-http = true\n\n[upstream]\nkind = \"mock\"\n\n[log]\ninvocations = \"\"\n\n\
         [ledger]\nstore = \"memory\"\n\n[engine]\ncache-dir = {:?}\n\n{}{}{}{}",
        std::env::temp_dir()
            .join("tollgate-example-cache")
            .display()
            .to_string(),
        tenant("acme", "100", "", ""),
        tenant("globex", "100", "", "downgrade-at-percent = 0"),
        tenant("initech", "100", "rpm = 1", ""),
        tenant("umbrella", "0.00001", "", ""),
    )
}

/// The client a service builds once per tenant (or once, with `AsTenant` per call).
fn client_for(gateway: &tollgate_host::gateway::Gateway, tenant: &str) -> Client {
    let base = Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDEXAMPLE", "secret", None, None, "example"))
        .build();
    let in_process = InProcess::new(gateway.clone(), TenantId::new(tenant).expect("tenant id"));
    Client::from_conf(base.to_builder().http_client(in_process.into_shared()).build())
}

async fn ask(client: &Client, model: &str) -> String {
    let message = Message::builder()
        .role(ConversationRole::User)
        .content(ContentBlock::Text("What does tollgate do?".into()))
        .build()
        .expect("message");
    match client.converse().model_id(model).messages(message).send().await {
        Ok(out) => format!(
            "answered, {} output tokens",
            out.usage().map_or(0, |u| u.output_tokens())
        ),
        Err(err) => {
            // Tollgate's refusals are Bedrock's own error codes, as from Bedrock itself.
            let err = err.into_service_error();
            format!(
                "refused: {}: {}",
                err.code().unwrap_or("?"),
                err.message().unwrap_or_default()
            )
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = std::env::args().nth(1).unwrap_or_else(|| "budget_guard.wasm".into());
    let config = TollgateConfig::parse(&tollgate_toml(&policy), "sdk_interceptor example")?;
    let assembled = app::assemble(&config).await?;
    let gateway = assembled.gateway;
    // Expired holds back to their budgets, and the holds of calls whose
    // process died charged: every host of the gateway runs this once.
    let upkeep = tokio::spawn({
        let gateway = gateway.clone();
        async move { gateway.upkeep().await }
    });

    // initech allows one request a minute: of three calls in a row, at least
    // one is refused even when they straddle a minute's boundary.
    for tenant in ["acme", "globex", "initech", "initech", "initech", "umbrella"] {
        let outcome = ask(&client_for(&gateway, tenant), SONNET).await;
        println!("{tenant:>9}: {outcome}");
    }
    gateway.idle().await;
    for tenant in ["acme", "globex", "initech", "umbrella"] {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let state = gateway
            .accounting()
            .ledger()
            .snapshot(&TenantId::new(tenant)?, now_ms)?;
        println!("{tenant:>9}: spent {} of {}", state.spent, state.limit);
    }
    upkeep.abort();
    if let Some(mock) = assembled.mock {
        mock.shutdown().await;
    }
    Ok(())
}

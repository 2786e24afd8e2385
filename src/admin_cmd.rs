//! `tollgate admin …`: the admin API from the command line, so an operator
//! never hand-writes curl. Every command is one HTTP call; the answer is
//! printed for people (or as JSON with `--json`), and a refusal exits
//! non-zero with the gateway's own message.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use tollgate_host::config::Config;

/// Where the admin API is and how to reach it.
#[derive(Args)]
pub struct Target {
    /// The gateway's admin URL (default: from the config's admin-listen).
    #[arg(long, global = true)]
    url: Option<String>,
    /// The admin token (default: TOLLGATE_ADMIN_TOKEN, then the config's).
    #[arg(long, global = true)]
    token: Option<String>,
    /// The gateway's configuration, for the URL, token and TLS certificate.
    #[arg(long, short, global = true, default_value = "tollgate.toml")]
    config: PathBuf,
    /// A PEM certificate to trust (default: the config's tls-cert).
    #[arg(long, global = true)]
    ca_cert: Option<PathBuf>,
    /// Print the API's JSON answer as it is.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Every tenant.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// One tenant: show, create, change.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// A tenant's bearer and SigV4 keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// A tenant's policy versions: upload, shadow, promote, roll back.
    #[command(subcommand)]
    Policy(PolicyAdminCommand),
}

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Budget, spend, alert level and policy version of every tenant.
    List,
}

#[derive(Subcommand)]
pub enum TenantCommand {
    Show {
        tenant: String,
    },
    /// A new tenant, with no keys and no policy yet.
    Create {
        tenant: String,
        /// The budget per period, in dollars ("50", "12.50").
        #[arg(long)]
        budget: String,
        #[arg(long, default_value = "")]
        tier: String,
        /// daily or monthly.
        #[arg(long)]
        period: Option<String>,
        /// IANA time zone periods start in, e.g. Europe/Berlin.
        #[arg(long)]
        time_zone: Option<String>,
        #[arg(long)]
        rpm: Option<u32>,
        #[arg(long)]
        tpm: Option<u64>,
        #[arg(long)]
        included_tokens: Option<u64>,
    },
    /// Sets the budget per period, in dollars; the next call sees it.
    SetBudget {
        tenant: String,
        usd: String,
    },
    /// Refuses the tenant's calls; its keys and books are kept.
    Disable {
        tenant: String,
    },
    Enable {
        tenant: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Key ids (never secrets).
    List { tenant: String },
    /// A new key, printed once: a bearer key, or with --sigv4 an access key pair.
    Issue {
        tenant: String,
        #[arg(long)]
        sigv4: bool,
    },
    /// Revokes a key by id (`key-…`, or an access key id).
    Revoke { tenant: String, id: String },
}

#[derive(Subcommand)]
pub enum PolicyAdminCommand {
    /// The kept versions, who uploaded them and when.
    Versions { tenant: String },
    /// The active version and its settings.
    Show { tenant: String },
    /// Uploads a component; it is activated once its cases pass.
    Upload {
        tenant: String,
        wasm: PathBuf,
        /// A cases file it must pass (default: the tenant's configured ones).
        #[arg(long)]
        cases: Option<PathBuf>,
    },
    /// Runs a candidate beside the active version, enforcing nothing.
    Shadow {
        tenant: String,
        /// The candidate component; or --version of a kept one.
        wasm: Option<PathBuf>,
        #[arg(long)]
        cases: Option<PathBuf>,
        #[arg(long, conflicts_with = "wasm")]
        version: Option<u32>,
    },
    /// How often the shadow disagreed, and what it would have changed in money.
    ShadowReport { tenant: String },
    /// Stops shadowing.
    Unshadow { tenant: String },
    /// Makes the shadow the active version.
    Promote { tenant: String },
    /// Back to the version active before.
    Rollback { tenant: String },
    /// Activates a kept version by number.
    Activate { tenant: String, number: u32 },
    /// New settings for the active component: a new version, checked and activated.
    Set {
        tenant: String,
        /// The policy's parameters, as a JSON object (its policy-config).
        #[arg(long)]
        policy_config: Option<String>,
        /// closed or open.
        #[arg(long)]
        failure_mode: Option<String>,
        #[arg(long)]
        deadline_ms: Option<u64>,
        #[arg(long)]
        memory_limit_mib: Option<u32>,
    },
}

/// A resolved connection to the admin API.
struct Admin {
    client: reqwest::Client,
    url: String,
    token: String,
    json: bool,
    runtime: tokio::runtime::Runtime,
}

impl Admin {
    fn new(target: &Target) -> Result<Admin> {
        let config = if target.config.exists() {
            Some(Config::load(&target.config)?)
        } else {
            None
        };
        let url = match (&target.url, &config) {
            (Some(url), _) => url.trim_end_matches('/').to_owned(),
            (None, Some(config)) => {
                let scheme = if config.server.plain_http { "http" } else { "https" };
                format!("{scheme}://{}", config.server.admin_listen)
            }
            (None, None) => bail!(
                "where is the gateway? Pass --url (e.g. http://127.0.0.1:8444) or --config with its tollgate.toml"
            ),
        };
        let token = target
            .token
            .clone()
            .or_else(|| std::env::var("TOLLGATE_ADMIN_TOKEN").ok())
            .or_else(|| config.as_ref().and_then(|c| c.server.admin_token.clone()))
            .context("the admin API needs a token: --token, TOLLGATE_ADMIN_TOKEN or admin-token in the config")?;
        let ca = target.ca_cert.clone().or_else(|| {
            config
                .as_ref()
                .and_then(|c| c.server.tls_cert.as_ref().map(|cert| c.resolve(cert)))
        });
        let mut client = reqwest::Client::builder();
        if let Some(ca) = ca {
            let pem = std::fs::read(&ca).with_context(|| format!("cannot read the certificate {}", ca.display()))?;
            client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(Admin {
            client: client.build()?,
            url,
            token,
            json: target.json,
            runtime: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        })
    }

    /// One call; the answer's JSON, or the gateway's refusal as the error.
    fn call(&self, method: Method, path: &str, body: Body) -> Result<Value> {
        let url = format!("{}{path}", self.url);
        let mut request = self.client.request(method, &url).bearer_auth(&self.token);
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Form(form) => request.multipart(form),
        };
        self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
            let status = response.status();
            let text = response.text().await?;
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if !status.is_success() {
                let message = value
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_owned);
                bail!("the gateway refused ({status}): {message}");
            }
            Ok(value)
        })
    }
}

enum Body {
    None,
    Json(Value),
    Form(Form),
}

fn component_form(wasm: &Path, cases: Option<&Path>) -> Result<Form> {
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let mut form = Form::new().part("component", Part::bytes(bytes));
    if let Some(cases) = cases {
        let text = std::fs::read_to_string(cases).with_context(|| format!("cannot read {}", cases.display()))?;
        form = form.text("cases", text);
    }
    Ok(form)
}

fn tenant_path(tenant: &str) -> String {
    format!("/admin/tenants/{tenant}")
}

pub fn run(target: &Target, command: AdminCommand) -> Result<()> {
    let admin = Admin::new(target)?;
    let answer = match command {
        AdminCommand::Tenants(TenantsCommand::List) => {
            let list = admin.call(Method::GET, "/admin/tenants", Body::None)?;
            if !admin.json {
                print_tenants(&list);
                return Ok(());
            }
            list
        }
        AdminCommand::Tenant(command) => tenant(&admin, command)?,
        AdminCommand::Keys(command) => keys(&admin, command)?,
        AdminCommand::Policy(command) => policy(&admin, command)?,
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn tenant(admin: &Admin, command: TenantCommand) -> Result<Value> {
    match command {
        TenantCommand::Show { tenant } => admin.call(Method::GET, &tenant_path(&tenant), Body::None),
        TenantCommand::Create {
            tenant,
            budget,
            tier,
            period,
            time_zone,
            rpm,
            tpm,
            included_tokens,
        } => {
            let mut body = json!({ "tenant": tenant, "budget-usd": budget, "tier": tier });
            let fields = [
                ("period", period.map(Value::from)),
                ("time-zone", time_zone.map(Value::from)),
                ("rpm", rpm.map(Value::from)),
                ("tpm", tpm.map(Value::from)),
                ("included-tokens", included_tokens.map(Value::from)),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            admin.call(Method::POST, "/admin/tenants", Body::Json(body))
        }
        TenantCommand::SetBudget { tenant, usd } => admin.call(
            Method::PATCH,
            &tenant_path(&tenant),
            Body::Json(json!({ "budget-usd": usd })),
        ),
        TenantCommand::Disable { tenant } => admin.call(
            Method::PATCH,
            &tenant_path(&tenant),
            Body::Json(json!({ "disabled": true })),
        ),
        TenantCommand::Enable { tenant } => admin.call(
            Method::PATCH,
            &tenant_path(&tenant),
            Body::Json(json!({ "disabled": false })),
        ),
    }
}

fn keys(admin: &Admin, command: KeysCommand) -> Result<Value> {
    match command {
        KeysCommand::List { tenant } => admin.call(Method::GET, &format!("{}/keys", tenant_path(&tenant)), Body::None),
        KeysCommand::Issue { tenant, sigv4 } => {
            let kind = if sigv4 { "access-keys" } else { "api-keys" };
            let issued = admin.call(Method::POST, &format!("{}/{kind}", tenant_path(&tenant)), Body::None)?;
            if !admin.json {
                eprintln!("The secret is shown this once; store it now. Revoke it with `tollgate admin keys revoke`.");
            }
            Ok(issued)
        }
        KeysCommand::Revoke { tenant, id } => {
            // Bearer key ids start with `key-`; anything else is an access key id.
            let kind = if id.starts_with("key-") {
                "api-keys"
            } else {
                "access-keys"
            };
            admin.call(
                Method::DELETE,
                &format!("{}/{kind}/{id}", tenant_path(&tenant)),
                Body::None,
            )
        }
    }
}

fn policy(admin: &Admin, command: PolicyAdminCommand) -> Result<Value> {
    let path = |tenant: &str, rest: &str| format!("{}/policy{rest}", tenant_path(tenant));
    match command {
        PolicyAdminCommand::Versions { tenant } => admin.call(Method::GET, &path(&tenant, "/versions"), Body::None),
        PolicyAdminCommand::Show { tenant } => admin.call(Method::GET, &path(&tenant, ""), Body::None),
        PolicyAdminCommand::Upload { tenant, wasm, cases } => admin.call(
            Method::POST,
            &path(&tenant, ""),
            Body::Form(component_form(&wasm, cases.as_deref())?),
        ),
        PolicyAdminCommand::Shadow {
            tenant,
            wasm,
            cases,
            version,
        } => match (wasm, version) {
            (Some(wasm), None) => admin.call(
                Method::PUT,
                &path(&tenant, "/shadow"),
                Body::Form(component_form(&wasm, cases.as_deref())?),
            ),
            (None, Some(version)) => admin.call(
                Method::PUT,
                &path(&tenant, &format!("/shadow?version={version}")),
                Body::None,
            ),
            _ => bail!("name the candidate: a .wasm file, or --version N of a kept version"),
        },
        PolicyAdminCommand::ShadowReport { tenant } => admin.call(Method::GET, &path(&tenant, "/shadow"), Body::None),
        PolicyAdminCommand::Unshadow { tenant } => admin.call(Method::DELETE, &path(&tenant, "/shadow"), Body::None),
        PolicyAdminCommand::Promote { tenant } => admin.call(Method::POST, &path(&tenant, "/promote"), Body::None),
        PolicyAdminCommand::Rollback { tenant } => admin.call(Method::POST, &path(&tenant, "/rollback"), Body::None),
        PolicyAdminCommand::Set {
            tenant,
            policy_config,
            failure_mode,
            deadline_ms,
            memory_limit_mib,
        } => {
            let mut body = json!({});
            if let Some(config) = policy_config {
                body["config"] = serde_json::from_str(&config).context("--policy-config must be a JSON object")?;
            }
            let fields = [
                ("failure-mode", failure_mode.map(Value::from)),
                ("deadline-ms", deadline_ms.map(Value::from)),
                ("memory-limit-mib", memory_limit_mib.map(Value::from)),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            admin.call(Method::PATCH, &path(&tenant, "/settings"), Body::Json(body))
        }
        PolicyAdminCommand::Activate { tenant, number } => admin.call(
            Method::POST,
            &path(&tenant, &format!("/versions/{number}/activate")),
            Body::None,
        ),
    }
}

/// The tenant list as a table; money in dollars, exact.
fn print_tenants(list: &Value) {
    println!(
        "{:<20} {:<10} {:>16} {:>16} {:>8} {:<16}",
        "tenant", "tier", "budget $", "spent $", "alert", "policy"
    );
    for tenant in list.as_array().into_iter().flatten() {
        let text = |key: &str| tenant.get(key).and_then(Value::as_str).unwrap_or("-").to_owned();
        let usd = |key: &str| {
            tenant
                .get(key)
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_owned(), |n| tollgate_host::money::NanoUsd(n).to_string())
        };
        println!(
            "{:<20} {:<10} {:>16} {:>16} {:>8} {:<16}",
            text("tenant"),
            text("tier"),
            usd("budget-nano-usd"),
            usd("spent-nano-usd"),
            text("alert"),
            text("policy-version"),
        );
    }
}

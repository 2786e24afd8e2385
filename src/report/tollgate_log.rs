//! tollgate's own invocation log (`InvocationRecord`, one JSON line per
//! call). Only the fields a report needs are read, borrowed from the line.
//!
//! A record's charge is taken as logged (`tollgate.costNanoUsd`), never
//! repriced, so a report's totals are the ledger's to the nano-dollar. Only
//! what a downgrade saved is priced here: the requested model's price of the
//! same usage (same region, tier and latency mode) minus the charge.

use std::borrow::Cow;

use serde::Deserialize;
use tollgate_host::gateway::invocation_log::{Billing, TokenCounts};
use tollgate_host::gateway::restored::{is_restored, joining_hold};
use tollgate_host::pricing::{Metered, ServedAs};

use super::filter::parse_timestamp;
use super::group::{Call, Savings, Tokens};
use super::prices::Prices;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line<'a> {
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    model_id: Cow<'a, str>,
    #[serde(default)]
    input: TokenCounts,
    #[serde(default)]
    output: TokenCounts,
    #[serde(default, borrow)]
    request_metadata: Pairs<'a>,
    #[serde(borrow)]
    tollgate: Fields<'a>,
}

/// tollgate's pairs of `requestMetadata`; the caller's own are not needed.
#[derive(Deserialize, Default)]
pub struct Pairs<'a> {
    #[serde(rename = "tollgate-tenant", borrow, default)]
    pub tenant: Option<Cow<'a, str>>,
    #[serde(rename = "tollgate-user", borrow, default)]
    pub user: Option<Cow<'a, str>>,
    #[serde(rename = "tollgate-use-case", borrow, default)]
    pub use_case: Option<Cow<'a, str>>,
    #[serde(rename = "tollgate-decision", borrow, default)]
    pub decision: Option<Cow<'a, str>>,
    #[serde(rename = "tollgate-original-model", borrow, default)]
    pub original_model: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(default, borrow)]
    request_id: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    /// The caller's user and use case, logged for refused calls too (whose
    /// `requestMetadata` is empty: nothing was forwarded).
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    use_case: Option<Cow<'a, str>>,
    #[serde(borrow)]
    decision: Cow<'a, str>,
    #[serde(borrow)]
    requested_model_id: Cow<'a, str>,
    #[serde(default, borrow)]
    served_model_id: Option<Cow<'a, str>>,
    /// The ledger's id of the call's hold.
    #[serde(default)]
    reservation: Option<u64>,
    cost_nano_usd: u64,
    #[serde(default)]
    billing: Option<Billing>,
}

/// A record's place among the restored charges and the calls that may
/// supersede them (see `restored`).
#[derive(Debug, PartialEq, Eq)]
pub enum Joined<'a> {
    /// A restored charge of this tenant's fleet hold.
    Restored(&'a str, u64),
    /// A call's own record, of this tenant's fleet hold.
    Call(&'a str, u64),
    /// A record that joins nothing.
    Alone,
}

/// Parses one line; the error says what is wrong with it.
pub fn parse(line: &str) -> Result<Line<'_>, String> {
    serde_json::from_str(line).map_err(|e| {
        if line.contains("\"schemaType\"") && !line.contains("\"tollgate\"") {
            format!("{e} (this looks like a Bedrock log record: pass its folder with --bedrock-logs)")
        } else {
            e.to_string()
        }
    })
}

impl<'a> Line<'a> {
    /// How the record joins a restored charge, if it does.
    pub fn joined(&self) -> Joined<'_> {
        let t = &self.tollgate;
        match joining_hold(t.reservation) {
            Some(id) if is_restored(&t.request_id) => Joined::Restored(&t.tenant, id),
            Some(id) => Joined::Call(&t.tenant, id),
            None => Joined::Alone,
        }
    }

    /// The call the line records.
    pub fn call(&'a self, prices: &mut Prices) -> Result<Call<'a>, String> {
        let t = &self.tollgate;
        let metadata = &self.request_metadata;
        let savings = match (t.decision.as_ref(), &t.served_model_id, &t.billing) {
            (
                "downgrade",
                Some(_),
                Some(Billing {
                    usage: Some(usage),
                    region,
                    service_tier,
                    latency,
                    ..
                }),
            ) => {
                let metered = Metered {
                    usage: (*usage).into(),
                    served_as: ServedAs {
                        tier: *service_tier,
                        latency: *latency,
                    },
                };
                match prices.charge(Some(region), &t.requested_model_id, &metered) {
                    Ok(asked) => Savings::Saved(signed(asked) - signed(t.cost_nano_usd)),
                    Err(_) => Savings::Unknown,
                }
            }
            // Charged its hold, or failed: no usage to price the requested model with.
            ("downgrade", _, _) => Savings::Unknown,
            _ => Savings::None,
        };
        Ok(Call {
            at: parse_timestamp(&self.timestamp)?,
            tenant: &t.tenant,
            user: t.user.as_deref().or(metadata.user.as_deref()).unwrap_or(""),
            use_case: t.use_case.as_deref().or(metadata.use_case.as_deref()).unwrap_or(""),
            model: &self.model_id,
            decision: &t.decision,
            tokens: Tokens {
                input: self.input.input_token_count.unwrap_or(0),
                output: self.output.output_token_count.unwrap_or(0),
                cache_read: self.input.cache_read_input_token_count.unwrap_or(0),
                cache_write: self.input.cache_write_input_token_count.unwrap_or(0),
            },
            cost: Some(t.cost_nano_usd),
            savings,
        })
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value};
    use tollgate_host::gateway::invocation_log::{BilledTokens, InvocationRecord, TollgateFields};
    use tollgate_host::gateway::metadata::keys;
    use tollgate_host::pricing::Catalog;

    use super::*;

    /// A downgraded Sonnet 4 call served by Claude 3.5 Haiku, as the gateway logs it.
    fn downgraded() -> InvocationRecord {
        let mut metadata = Map::new();
        for (key, value) in [
            (keys::TENANT, "acme"),
            (keys::DECISION, "downgrade"),
            (keys::USER, "alice"),
            (keys::USE_CASE, "support"),
        ] {
            metadata.insert(key.to_owned(), Value::from(value));
        }
        InvocationRecord {
            schema_type: "ModelInvocationLog".into(),
            schema_version: "1.0".into(),
            timestamp: "2026-11-28T23:59:59.500+01:00".into(),
            request_id: "r-1".into(),
            operation: "Converse".into(),
            model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".into(),
            input: TokenCounts {
                input_token_count: Some(1000),
                ..TokenCounts::default()
            },
            output: TokenCounts {
                output_token_count: Some(100),
                ..TokenCounts::default()
            },
            request_metadata: metadata,
            tollgate: TollgateFields {
                tenant: "acme".into(),
                decision: "downgrade".into(),
                requested_model_id: "anthropic.claude-sonnet-4-20250514-v1:0".into(),
                served_model_id: Some("anthropic.claude-3-5-haiku-20241022-v1:0".into()),
                // 1000 × $0.80/M + 100 × $4/M = $0.0012
                cost_nano_usd: 1_200_000,
                charged_from: "usage".into(),
                billing: Some(Billing {
                    region: "us-east-1".into(),
                    usage: Some(BilledTokens {
                        input: 1000,
                        output: 100,
                        ..BilledTokens::default()
                    }),
                    ..Billing::default()
                }),
                ..TollgateFields::default()
            },
        }
    }

    #[test]
    fn reads_the_gateways_own_records_and_prices_what_a_downgrade_saved() {
        let line = serde_json::to_string(&downgraded()).expect("json");
        let parsed = parse(&line).expect("parses");
        let mut prices = Prices::new(Catalog::embedded());
        let call = parsed.call(&mut prices).expect("call");
        assert_eq!(
            (call.tenant, call.user, call.use_case, call.decision),
            ("acme", "alice", "support", "downgrade")
        );
        assert_eq!(
            call.at.to_rfc3339(),
            "2026-11-28T22:59:59.500+00:00",
            "days are UTC days"
        );
        assert_eq!(call.cost, Some(1_200_000));
        assert_eq!((call.tokens.input, call.tokens.output), (1000, 100));
        // On Sonnet 4: 1000 × $3/M + 100 × $15/M = $0.0045, so $0.0033 saved.
        assert_eq!(call.savings, Savings::Saved(4_500_000 - 1_200_000));
    }

    #[test]
    fn a_downgrade_charged_its_hold_has_unknown_savings() {
        let mut record = downgraded();
        record.tollgate.charged_from = "reservation".into();
        record.tollgate.billing = None;
        let line = serde_json::to_string(&record).expect("json");
        let parsed = parse(&line).expect("parses");
        let call = parsed.call(&mut Prices::new(Catalog::embedded())).expect("call");
        assert_eq!(call.savings, Savings::Unknown);
    }

    #[test]
    fn a_bedrock_record_given_as_a_tollgate_log_says_so() {
        let err = parse(r#"{"schemaType":"ModelInvocationLog","modelId":"x","timestamp":"t"}"#)
            .err()
            .expect("refused");
        assert!(
            err.contains("missing field `tollgate`") && err.contains("--bedrock-logs"),
            "{err}"
        );
    }
}

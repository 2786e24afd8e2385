//! `requestMetadata` for the forwarded call: the caller's pairs plus tollgate's own.
//!
//! Bedrock's limits: at most [`MAX_PAIRS`] pairs; keys of 1–256 characters and
//! values of 0–256, drawn from `[a-zA-Z0-9\s:_@$#=/+,-.]`.
//!
//! What gives way when there is no room, deterministically:
//!
//! 1. tollgate's pairs come first, always, in this priority order: tenant,
//!    decision, policy version, policy failure (only when a fail-open tenant's
//!    policy failed), original model (only when downgraded), user, use case.
//!    There are at most seven, so they always fit.
//! 2. The verdict's pairs follow, in the policy's order. A verdict holds at most
//!    eight, checked against these same limits when it was made, and none in
//!    tollgate's namespace, so they always fit too.
//! 3. Any caller key in tollgate's namespace (`tollgate-`, any letter case) is
//!    dropped and reported, whether or not tollgate sets that key on this call:
//!    the log's `tollgate-*` pairs are always tollgate's word, never the caller's.
//!    A caller key the verdict also set is dropped: the policy's word wins.
//! 4. The caller's other pairs are kept in ascending key order (byte order)
//!    until the limit; the rest are dropped and reported. The order the caller
//!    sent them in does not matter.

use std::fmt;

use serde_json::Value;

use crate::ids::{ModelId, TenantId};

/// Most pairs Bedrock accepts in `requestMetadata`.
pub const MAX_PAIRS: usize = 16;
/// Key length bounds, in characters.
pub const MIN_KEY_CHARS: usize = 1;
pub const MAX_KEY_CHARS: usize = 256;
/// Most characters in a value (empty values are allowed).
pub const MAX_VALUE_CHARS: usize = 256;
/// Keys in this namespace belong to tollgate; callers cannot set them.
pub const RESERVED_PREFIX: &str = crate::registry::decision::RESERVED_METADATA_PREFIX;

/// tollgate's own keys, in the priority order they are reserved in.
pub mod keys {
    pub const TENANT: &str = "tollgate-tenant";
    pub const DECISION: &str = "tollgate-decision";
    pub const POLICY_VERSION: &str = "tollgate-policy-version";
    /// Set when a fail-open tenant's policy failed; the value is the failure kind.
    pub const POLICY_FAILURE: &str = "tollgate-policy-failure";
    pub const ORIGINAL_MODEL: &str = "tollgate-original-model";
    pub const USER: &str = "tollgate-user";
    pub const USE_CASE: &str = "tollgate-use-case";
}

/// What tollgate records about a call. `None` fields are left out.
#[derive(Debug, Clone, Copy)]
pub struct TollgatePairs<'a> {
    pub tenant: &'a TenantId,
    /// The verdict, e.g. `allow` or `downgrade`.
    pub decision: &'a str,
    pub policy_version: Option<&'a str>,
    /// The failure kind, when the policy failed and the tenant fails open.
    pub policy_failure: Option<&'a str>,
    /// The model the caller asked for, when the call was downgraded.
    pub original_model: Option<&'a ModelId>,
    pub user: Option<&'a str>,
    pub use_case: Option<&'a str>,
    /// The pairs the policy's verdict attached (already checked by the registry).
    pub verdict: &'a [(String, String)],
}

impl TollgatePairs<'_> {
    /// tollgate's pairs in priority order, values sanitised to Bedrock's charset and length.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let candidates = [
            (keys::TENANT, Some(self.tenant.as_str())),
            (keys::DECISION, Some(self.decision)),
            (keys::POLICY_VERSION, self.policy_version),
            (keys::POLICY_FAILURE, self.policy_failure),
            (keys::ORIGINAL_MODEL, self.original_model.map(ModelId::as_str)),
            (keys::USER, self.user),
            (keys::USE_CASE, self.use_case),
        ];
        candidates
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| (key, sanitise_value(v))))
            .collect()
    }
}

/// Why one of the caller's pairs was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The key is in tollgate's `tollgate-` namespace.
    Reserved,
    /// The 16 pairs were used up by tollgate's, the verdict's and earlier (by key order) caller pairs.
    NoRoom,
    /// The tenant's policy set the same key in its verdict.
    Overridden,
    /// The pair breaks Bedrock's limits (only if it bypassed [`validate_caller`]).
    Invalid,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Reserved => "the tollgate- prefix is reserved for tollgate's own keys",
            DropReason::NoRoom => "Bedrock allows 16 pairs and tollgate's and the policy's come first",
            DropReason::Overridden => "the tenant's policy set this key",
            DropReason::Invalid => "it breaks Bedrock's requestMetadata limits",
        })
    }
}

/// A caller pair that was left out, for the log and a response header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub key: String,
    pub reason: DropReason,
}

/// The `requestMetadata` to forward.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Merged {
    /// tollgate's pairs in priority order, then the caller's kept pairs in key order.
    pub pairs: Vec<(String, String)>,
    /// The caller's pairs that were left out, in key order.
    pub dropped: Vec<Dropped>,
}

impl Merged {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The `requestMetadata` JSON object for the forwarded request.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }
}

/// Merges the caller's pairs (as returned by [`validate_caller`]) with tollgate's.
pub fn merge(caller: &[(String, String)], ours: &TollgatePairs<'_>) -> Merged {
    let mut pairs: Vec<(String, String)> = ours.pairs().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let mut dropped = Vec::new();
    // Checked when the verdict was made; re-checked here so a pair that slipped
    // through can never make Bedrock refuse the call.
    for (key, value) in ours.verdict {
        let usable = !is_reserved(key) && check_key(key).is_ok() && check_value(key, value).is_ok();
        let fresh = !pairs.iter().any(|(k, _)| k == key);
        if usable && fresh && pairs.len() < MAX_PAIRS {
            pairs.push((key.clone(), value.clone()));
        }
    }
    let from_verdict = |key: &str| ours.verdict.iter().any(|(k, _)| k == key);

    let mut theirs: Vec<&(String, String)> = caller.iter().collect();
    theirs.sort();
    // A repeated key keeps its first value in sorted order; later copies are dropped as invalid.
    let mut last_key: Option<&str> = None;
    for (key, value) in theirs {
        let reason = if is_reserved(key) {
            Some(DropReason::Reserved)
        } else if from_verdict(key) {
            Some(DropReason::Overridden)
        } else if last_key == Some(key.as_str()) || check_key(key).is_err() || check_value(key, value).is_err() {
            Some(DropReason::Invalid)
        } else if pairs.len() >= MAX_PAIRS {
            Some(DropReason::NoRoom)
        } else {
            None
        };
        last_key = Some(key);
        match reason {
            Some(reason) => dropped.push(Dropped {
                key: key.clone(),
                reason,
            }),
            None => pairs.push((key.clone(), value.clone())),
        }
    }
    Merged { pairs, dropped }
}

/// Case-insensitive, since log readers such as Athena's JSON SerDe fold key case.
pub fn is_reserved(key: &str) -> bool {
    key.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// Bedrock's metadata charset; one definition for caller and verdict pairs.
pub use crate::registry::is_metadata_char as is_allowed_char;

/// Replaces characters outside the charset with '_' and cuts to 256 characters. Of whitespace
/// only the plain space is kept: line breaks in our values would only confuse log readers.
pub fn sanitise_value(value: &str) -> String {
    value
        .chars()
        .take(MAX_VALUE_CHARS)
        .map(|c| {
            if c == ' ' || (is_allowed_char(c) && !c.is_whitespace()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A caller's `requestMetadata` that Bedrock would refuse. Answered as a 400 `ValidationException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("requestMetadata must be a JSON object mapping string keys to string values, not {found}")]
    NotAnObject { found: &'static str },
    #[error(
        "requestMetadata has {count} pairs; Bedrock allows at most {MAX_PAIRS} (tollgate adds up to 6 of its own \
         and keeps yours in key order while there is room)"
    )]
    TooManyPairs { count: usize },
    #[error("requestMetadata key {key:?} has {chars} characters; Bedrock allows {MIN_KEY_CHARS}–{MAX_KEY_CHARS}")]
    KeyLength { key: String, chars: usize },
    #[error("requestMetadata value of key {key:?} is {found}; values must be strings")]
    ValueNotString { key: String, found: &'static str },
    #[error("requestMetadata value of key {key:?} has {chars} characters; Bedrock allows 0–{MAX_VALUE_CHARS}")]
    ValueLength { key: String, chars: usize },
    #[error(
        "requestMetadata {what} {key:?} has {ch:?} at character {position}; Bedrock allows only letters, digits, \
         whitespace and : _ @ $ # = / + , - ."
    )]
    BadChar {
        what: &'static str,
        key: String,
        ch: char,
        position: usize,
    },
}

impl MetadataError {
    pub fn error_type(&self) -> &'static str {
        "ValidationException"
    }

    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }
}

/// Checks the caller's `requestMetadata` against Bedrock's limits and returns its pairs in key
/// order. `null` counts as absent. The first problem in key order is reported.
pub fn validate_caller(value: &Value) -> Result<Vec<(String, String)>, MetadataError> {
    let map = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Object(map) => map,
        other => {
            return Err(MetadataError::NotAnObject {
                found: json_kind(other),
            });
        }
    };
    if map.len() > MAX_PAIRS {
        return Err(MetadataError::TooManyPairs { count: map.len() });
    }
    // Sorted here so the reported problem does not depend on serde_json's map order feature.
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut pairs = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        check_key(key)?;
        let Value::String(text) = value else {
            return Err(MetadataError::ValueNotString {
                key: crate::text::clip(key, 64),
                found: json_kind(value),
            });
        };
        check_value(key, text)?;
        pairs.push((key.clone(), text.clone()));
    }
    Ok(pairs)
}

fn check_key(key: &str) -> Result<(), MetadataError> {
    let chars = key.chars().count();
    if !(MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&chars) {
        return Err(MetadataError::KeyLength {
            key: crate::text::clip(key, 64),
            chars,
        });
    }
    check_chars("key", key, key)
}

fn check_value(key: &str, value: &str) -> Result<(), MetadataError> {
    let chars = value.chars().count();
    if chars > MAX_VALUE_CHARS {
        return Err(MetadataError::ValueLength {
            key: crate::text::clip(key, 64),
            chars,
        });
    }
    check_chars("value of key", key, value)
}

fn check_chars(what: &'static str, key: &str, text: &str) -> Result<(), MetadataError> {
    match text.chars().enumerate().find(|(_, c)| !is_allowed_char(*c)) {
        Some((i, ch)) => Err(MetadataError::BadChar {
            what,
            key: crate::text::clip(key, 64),
            ch,
            position: i + 1,
        }),
        None => Ok(()),
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(n: usize) -> Vec<(String, String)> {
        (0..n).map(|i| (format!("k{i:02}"), format!("v{i}"))).collect()
    }

    #[test]
    fn ours_come_first_in_priority_order() {
        let tenant = TenantId::new("acme").unwrap();
        let original = ModelId::new("us.anthropic.claude-sonnet-4-20250514-v1:0");
        let ours = TollgatePairs {
            tenant: &tenant,
            decision: "downgrade",
            policy_version: Some("v7"),
            policy_failure: None,
            original_model: Some(&original),
            user: Some("alice@example.com"),
            use_case: Some("support"),
            verdict: &[],
        };
        let merged = merge(&[("team".into(), "blue".into())], &ours);
        let keys: Vec<&str> = merged.pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                keys::TENANT,
                keys::DECISION,
                keys::POLICY_VERSION,
                keys::ORIGINAL_MODEL,
                keys::USER,
                keys::USE_CASE,
                "team"
            ]
        );
        assert_eq!(
            merged.get(keys::ORIGINAL_MODEL),
            Some("us.anthropic.claude-sonnet-4-20250514-v1:0")
        );
        assert_eq!(merged.get(keys::USER), Some("alice@example.com"));
        assert!(merged.dropped.is_empty());
        assert_eq!(merged.to_json()["tollgate-tenant"], "acme");
    }

    #[test]
    fn caller_pairs_give_way_in_key_order_whatever_the_input_order() {
        let tenant = TenantId::new("acme").unwrap();
        let ours = TollgatePairs {
            tenant: &tenant,
            decision: "allow",
            policy_version: Some("v1"),
            policy_failure: None,
            original_model: None,
            user: Some("u1"),
            use_case: None,
            verdict: &[],
        };
        let forward = caller(16);
        let mut backward = forward.clone();
        backward.reverse();
        let a = merge(&forward, &ours);
        let b = merge(&backward, &ours);
        assert_eq!(a, b);
        assert_eq!(a.pairs.len(), MAX_PAIRS);
        // 4 of ours leave room for k00..k11; k12..k15 give way.
        assert_eq!(a.pairs[4].0, "k00");
        assert_eq!(a.pairs[15].0, "k11");
        let dropped: Vec<&str> = a.dropped.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(dropped, ["k12", "k13", "k14", "k15"]);
        assert!(a.dropped.iter().all(|d| d.reason == DropReason::NoRoom));
    }

    #[test]
    fn callers_cannot_set_tollgate_keys() {
        let tenant = TenantId::new("acme").unwrap();
        let ours = TollgatePairs {
            tenant: &tenant,
            decision: "allow",
            policy_version: None,
            policy_failure: None,
            original_model: None,
            user: None,
            use_case: None,
            verdict: &[],
        };
        let spoof = vec![
            ("tollgate-tenant".to_owned(), "globex".to_owned()),
            ("Tollgate-Original-Model".to_owned(), "x".to_owned()),
            ("tollgate-user".to_owned(), "mallory".to_owned()),
            ("tenant".to_owned(), "globex".to_owned()),
        ];
        let merged = merge(&spoof, &ours);
        assert_eq!(merged.get(keys::TENANT), Some("acme"));
        assert_eq!(merged.get(keys::USER), None);
        assert_eq!(
            merged.get("tenant"),
            Some("globex"),
            "non-reserved caller keys pass through untouched"
        );
        assert_eq!(merged.pairs.len(), 3);
        assert_eq!(merged.dropped.len(), 3);
        assert!(merged.dropped.iter().all(|d| d.reason == DropReason::Reserved));
    }

    #[test]
    fn verdict_pairs_and_the_failure_flag_are_forwarded_and_win_over_the_caller() {
        let tenant = TenantId::new("acme").unwrap();
        let verdict = vec![
            ("budget-percent".to_string(), "81".to_string()),
            ("team".to_string(), "policy-says".to_string()),
        ];
        let ours = TollgatePairs {
            tenant: &tenant,
            decision: "allow",
            policy_version: Some("v2"),
            policy_failure: Some("trap"),
            original_model: None,
            user: None,
            use_case: None,
            verdict: &verdict,
        };
        let merged = merge(
            &[("team".into(), "caller-says".into()), ("zeta".into(), "z".into())],
            &ours,
        );
        let keys: Vec<&str> = merged.pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                keys::TENANT,
                keys::DECISION,
                keys::POLICY_VERSION,
                keys::POLICY_FAILURE,
                "budget-percent",
                "team",
                "zeta"
            ]
        );
        assert_eq!(merged.get(keys::POLICY_FAILURE), Some("trap"));
        assert_eq!(merged.get("team"), Some("policy-says"));
        assert_eq!(
            merged.dropped,
            [Dropped {
                key: "team".into(),
                reason: DropReason::Overridden
            }]
        );
        // Seven of ours and eight of the verdict's always fit; the caller gets the last one.
        let verdict: Vec<(String, String)> = (0..8).map(|i| (format!("v{i}"), String::new())).collect();
        let original = ModelId::new("amazon.nova-pro-v1:0");
        let full = TollgatePairs {
            original_model: Some(&original),
            user: Some("u"),
            use_case: Some("c"),
            verdict: &verdict,
            ..ours
        };
        let merged = merge(&caller(3), &full);
        assert_eq!(merged.pairs.len(), MAX_PAIRS);
        assert_eq!(merged.dropped.len(), 2, "{:?}", merged.dropped);
    }

    #[test]
    fn our_values_are_sanitised_and_truncated() {
        let tenant = TenantId::new("acme").unwrap();
        let long = "x".repeat(300);
        let ours = TollgatePairs {
            tenant: &tenant,
            decision: "allow",
            policy_version: None,
            policy_failure: None,
            original_model: None,
            user: Some("Zoë Smith\n<zoe@example.com>"),
            use_case: Some(&long),
            verdict: &[],
        };
        let merged = merge(&[], &ours);
        assert_eq!(merged.get(keys::USER), Some("Zo_ Smith__zoe@example.com_"));
        assert_eq!(
            merged.get(keys::USE_CASE).map(|v| v.chars().count()),
            Some(MAX_VALUE_CHARS)
        );
        assert_eq!(
            sanitise_value("arn:aws:bedrock:us-east-1:1:x/y+z,=#$"),
            "arn:aws:bedrock:us-east-1:1:x/y+z,=#$"
        );
        for (_, v) in &merged.pairs {
            assert!(v.chars().all(is_allowed_char));
        }
    }

    #[test]
    fn invalid_caller_pairs_are_dropped_not_forwarded() {
        let tenant = TenantId::new("acme").unwrap();
        let ours = TollgatePairs {
            tenant: &tenant,
            decision: "allow",
            policy_version: None,
            policy_failure: None,
            original_model: None,
            user: None,
            use_case: None,
            verdict: &[],
        };
        let bad = vec![("".to_owned(), "v".to_owned()), ("ok".to_owned(), "é".to_owned())];
        let merged = merge(&bad, &ours);
        assert_eq!(merged.pairs.len(), 2);
        assert!(merged.dropped.iter().all(|d| d.reason == DropReason::Invalid));
    }

    #[test]
    fn validate_accepts_bedrock_shaped_metadata() {
        let ok = validate_caller(&json!({"team": "blue", "trace id": "a:b/c@d", "empty": ""})).unwrap();
        assert_eq!(
            ok,
            [
                ("empty".to_owned(), "".to_owned()),
                ("team".to_owned(), "blue".to_owned()),
                ("trace id".to_owned(), "a:b/c@d".to_owned())
            ]
        );
        assert_eq!(validate_caller(&Value::Null).unwrap(), []);
        let sixteen: serde_json::Map<String, Value> = (0..16).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert_eq!(validate_caller(&Value::Object(sixteen)).unwrap().len(), 16);
    }

    #[test]
    fn validate_explains_what_breaks_the_limits() {
        let msg = |v: Value| validate_caller(&v).unwrap_err().to_string();
        let long_key = "x".repeat(300);
        assert_eq!(
            msg(json!({ long_key.as_str(): "v" })),
            format!(
                "requestMetadata key \"{}…\" has 300 characters; Bedrock allows 1–256",
                "x".repeat(64)
            )
        );
        assert_eq!(
            msg(json!({"": "v"})),
            "requestMetadata key \"\" has 0 characters; Bedrock allows 1–256"
        );
        assert_eq!(
            msg(json!({"k": "y".repeat(257)})),
            "requestMetadata value of key \"k\" has 257 characters; Bedrock allows 0–256"
        );
        assert_eq!(
            msg(json!({"k": 3})),
            "requestMetadata value of key \"k\" is a number; values must be strings"
        );
        assert!(msg(json!(["k"])).contains("not an array"));
        let seventeen: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(msg(Value::Object(seventeen)).starts_with("requestMetadata has 17 pairs; Bedrock allows at most 16"));
        let bad_char = msg(json!({"team": "a;b"}));
        assert!(
            bad_char.starts_with("requestMetadata value of key \"team\" has ';' at character 2"),
            "{bad_char}"
        );
        let bad_key = msg(json!({"té": "v"}));
        assert!(
            bad_key.starts_with("requestMetadata key \"té\" has 'é' at character 2"),
            "{bad_key}"
        );
        let err = validate_caller(&json!({"k": 1})).unwrap_err();
        assert_eq!((err.error_type(), err.status().as_u16()), ("ValidationException", 400));
    }
}

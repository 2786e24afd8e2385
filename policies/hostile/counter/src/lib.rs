//! Keeps state between calls, which the contract forbids: it counts the
//! calls its instance has served and rejects every call after `flip-after`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use tollgate_policy::*;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
struct Config {
    flip_after: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { flip_after: 200 }
    }
}

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Policy for Counter {
    fn validate_config(config: &str) -> Result<(), String> {
        parse_config::<Config>(config).map(drop)
    }

    fn decide(request: &Request, _state: &TenantState) -> Verdict {
        let flip_after = parse_config::<Config>(&request.config).map_or(200, |c| c.flip_after);
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if calls > flip_after {
            Verdict::reject(RejectKind::Denied, "counter: this instance has served enough calls")
        } else {
            Verdict::admit("counter: admitted")
        }
    }
}

export_policy!(Counter);

//! A tenant's limits: its money budget per period, its rate limits and the
//! tokens its tier includes.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::money::NanoUsd;

use super::period::Period;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    /// The most the tenant may spend per period.
    pub budget: NanoUsd,
    pub period: Period,
    /// Periods start at midnight in this IANA time zone, e.g. "Europe/Berlin".
    #[serde(default = "utc")]
    pub time_zone: Tz,
    /// Requests per minute; `None` for no limit.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute; `None` for no limit.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Tokens included in the tenant's tier per period. The ledger tracks use
    /// against it; what happens past it is the policy's decision.
    #[serde(default)]
    pub included_tokens: u64,
}

fn utc() -> Tz {
    Tz::UTC
}

impl TenantLimits {
    /// A monthly budget in UTC with no rate limits and no included tokens.
    pub fn monthly(budget: NanoUsd) -> Self {
        TenantLimits {
            budget,
            period: Period::Monthly,
            time_zone: Tz::UTC,
            rpm: None,
            tpm: None,
            included_tokens: 0,
        }
    }
}

//! How tollgate's own refusals become Bedrock errors: a reject verdict, a
//! reservation the ledger refused, and an upstream that failed. Each names
//! the limit, the figures, what was charged, and what to do.

use http::StatusCode;

use crate::contract::{RejectKind, TenantState};
use crate::ids::TenantId;
use crate::ledger::{LedgerError, ReserveError, StoreError};
use crate::upstream::bedrock::UpstreamError;
use crate::upstream::error::BedrockError;

/// A reject verdict as a Bedrock error that says which limit, the figures, and what to do.
pub(super) fn reject(
    tenant: &TenantId,
    version: &str,
    kind: RejectKind,
    reason: &str,
    state: &TenantState,
    worst_case: u64,
) -> BedrockError {
    let b = &state.budget;
    let figures = format!(
        "{:?} budget {}, spent {}, held for calls in flight {}, this call up to {}",
        b.period,
        crate::money::NanoUsd(b.limit),
        crate::money::NanoUsd(b.spent),
        crate::money::NanoUsd(b.reserved),
        crate::money::NanoUsd(worst_case),
    )
    .to_lowercase();
    let message = format!(
        "tollgate rejected the call for tenant {tenant} ({kind}, policy {version}): {reason}. Figures: {figures}.",
        kind = kind.as_str()
    );
    match kind {
        RejectKind::BudgetExhausted => BedrockError::quota_exceeded(format!(
            "{message} The budget resets at the period's end; the operator can raise the tenant's budget"
        )),
        RejectKind::QuotaExceeded => BedrockError::quota_exceeded(format!(
            "{message} The operator can raise the tenant's quota or included tokens"
        )),
        RejectKind::ModelNotAllowed => BedrockError::access_denied(format!(
            "{message} Use a model the tenant's plan allows, or the operator can change the policy's config"
        )),
        RejectKind::Denied => BedrockError::access_denied(format!(
            "{message} The operator can change or roll back the tenant's policy"
        )),
    }
}

pub(super) fn reserve_refused(tenant: &TenantId, err: ReserveError) -> BedrockError {
    match &err {
        ReserveError::Budget { .. } => {
            BedrockError::quota_exceeded(format!("tollgate rejected the call for tenant {tenant}: {err}"))
        }
        ReserveError::Tpm {
            retry_after_ms,
            limit,
            requested,
            ..
        } => {
            if requested > limit {
                BedrockError::quota_exceeded(format!("tollgate rejected the call for tenant {tenant}: {err}"))
            } else {
                BedrockError::throttling(format!("tollgate throttled tenant {tenant}: {err}"), *retry_after_ms)
            }
        }
        ReserveError::Rpm { retry_after_ms, .. } => {
            BedrockError::throttling(format!("tollgate throttled tenant {tenant}: {err}"), *retry_after_ms)
        }
        ReserveError::UnknownTenant { .. } => BedrockError::access_denied(format!(
            "{err}. Give the tenant a budget under its [tenants] entry in tollgate.toml"
        )),
        ReserveError::Store(_) => BedrockError::unavailable(format!(
            "tollgate could not record the reservation for tenant {tenant}: {err}. Nothing was sent; retry"
        )),
    }
}

/// The tenant's figures could not be read: a store that does not answer is
/// a 503 to retry, anything else a 500.
pub(super) fn ledger_unreadable(tenant: &TenantId, err: LedgerError) -> BedrockError {
    let message = format!("tollgate could not read tenant {tenant}'s ledger: {err}");
    match err {
        LedgerError::Store(StoreError::Unavailable { .. }) => {
            BedrockError::unavailable(format!("{message}. Nothing was sent; retry"))
        }
        _ => BedrockError::internal(message),
    }
}

pub(super) fn upstream_failed(err: &UpstreamError) -> BedrockError {
    match err {
        UpstreamError::Timeout(_) => BedrockError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "ModelTimeoutException",
            format!(
                "tollgate forwarded the call but {err}. Bedrock may have run it, so it was charged at its reserved \
                 worst case; raise [upstream] timeout-ms if calls this long are expected"
            ),
        ),
        _ if err.may_have_run() => BedrockError::new(
            StatusCode::BAD_GATEWAY,
            "InternalServerException",
            format!(
                "tollgate forwarded the call but {err}. Bedrock may have run it, so it was charged at its reserved \
                 worst case"
            ),
        ),
        _ => BedrockError::unavailable(format!(
            "tollgate could not complete the call upstream: {err}. Nothing was charged; retry"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_name_the_limit_the_figures_and_the_remedy() {
        let tenant = TenantId::new("acme").expect("id");
        let mut state = TenantState::default();
        state.budget.limit = 5_000_000_000;
        state.budget.spent = 4_990_000_000;
        let err = reject(
            &tenant,
            "acme@v2",
            RejectKind::BudgetExhausted,
            "budget nearly spent",
            &state,
            20_000_000,
        );
        assert_eq!(err.error_type, "ServiceQuotaExceededException");
        for needle in [
            "acme",
            "budget-exhausted",
            "acme@v2",
            "$5",
            "$4.99",
            "raise the tenant's budget",
        ] {
            assert!(err.message.contains(needle), "{needle} missing: {}", err.message);
        }
    }

    #[test]
    fn reservation_refusals_map_to_bedrock_errors() {
        let tenant = TenantId::new("acme").expect("id");
        let rpm = reserve_refused(
            &tenant,
            ReserveError::Rpm {
                limit: 10,
                used: 10,
                retry_after_ms: 1500,
            },
        );
        assert_eq!(rpm.error_type, "ThrottlingException");
        assert_eq!(rpm.retry_after_secs, Some(2));
        let tpm_too_big = reserve_refused(
            &tenant,
            ReserveError::Tpm {
                limit: 100,
                used: 0,
                requested: 500,
                retry_after_ms: 100,
            },
        );
        assert_eq!(tpm_too_big.error_type, "ServiceQuotaExceededException");
    }
}

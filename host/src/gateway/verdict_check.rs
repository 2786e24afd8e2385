//! The gateway's own check of a verdict, on top of the contract's: a
//! downgrade must name a model tollgate can price, no other tenant's
//! inference profile, and (unless the tenant allows it) nothing dearer than
//! what was asked for. A verdict that fails it is an invalid output, and the
//! tenant's failure mode decides instead. Active and shadow verdicts are
//! held to the same check.

use crate::contract::{Action, Verdict};
use crate::money::NanoUsd;
use crate::pricing::{Catalog, ServedAs};

use super::service::TenantProfile;

/// What a downgrade is checked against.
#[derive(Clone, Copy)]
pub(super) struct VerdictCheck<'a> {
    pub(super) profile: &'a TenantProfile,
    pub(super) catalog: &'a Catalog,
    pub(super) input_tokens: u64,
    pub(super) max_output: u64,
    pub(super) uses_prompt_cache: bool,
    pub(super) asked: ServedAs,
    /// The hold of the model asked for.
    pub(super) requested_worst: NanoUsd,
}

impl VerdictCheck<'_> {
    pub(super) fn check(&self, verdict: &Verdict) -> Result<(), String> {
        let Action::Downgrade(target) = &verdict.action else {
            return Ok(());
        };
        if !self.profile.may_name(target) {
            return Err(format!(
                "downgrade target {} is an application inference profile of another tenant",
                crate::text::clip(target, 256)
            ));
        }
        let target_worst = self
            .catalog
            .hold(
                target,
                self.input_tokens,
                self.max_output,
                self.uses_prompt_cache,
                self.asked,
            )
            .map_err(|e| format!("downgrade target cannot be priced: {e}"))?;
        if target_worst > self.requested_worst && !self.profile.allow_costlier_downgrade {
            return Err(format!(
                "downgrade target {} would hold {} where the requested model holds {}; a downgrade may not cost more \
                 unless the tenant sets allow-costlier-downgrade",
                crate::text::clip(target, 256),
                target_worst,
                self.requested_worst
            ));
        }
        Ok(())
    }
}

/// A [`VerdictCheck`] that owns what it borrows, for a shadow decision
/// that outlives the call's task.
pub(super) struct OwnedVerdictCheck {
    profile: TenantProfile,
    catalog: std::sync::Arc<Catalog>,
    input_tokens: u64,
    max_output: u64,
    uses_prompt_cache: bool,
    asked: ServedAs,
    requested_worst: NanoUsd,
}

impl OwnedVerdictCheck {
    pub(super) fn new(check: &VerdictCheck<'_>, catalog: std::sync::Arc<Catalog>) -> Self {
        OwnedVerdictCheck {
            profile: check.profile.clone(),
            catalog,
            input_tokens: check.input_tokens,
            max_output: check.max_output,
            uses_prompt_cache: check.uses_prompt_cache,
            asked: check.asked,
            requested_worst: check.requested_worst,
        }
    }

    pub(super) fn borrow(&self) -> VerdictCheck<'_> {
        VerdictCheck {
            profile: &self.profile,
            catalog: &self.catalog,
            input_tokens: self.input_tokens,
            max_output: self.max_output,
            uses_prompt_cache: self.uses_prompt_cache,
            asked: self.asked,
            requested_worst: self.requested_worst,
        }
    }
}

//! business-hours: premium models only in business hours.
//!
//! Monday to Friday, 09:00 to 17:59 on the tenant's own clock, every call is
//! admitted as asked. Outside those hours a call goes to the cheapest model
//! of the operator's `downgrade-chain` that costs this call strictly less
//! than the requested model; with none, it is admitted. No parameters: the
//! time zone is the tenant's and the chain is the operator's setting.

use tollgate_policy::*;

struct BusinessHours;

impl Policy for BusinessHours {
    fn validate_config(config: &str) -> Result<(), String> {
        no_parameters(config)
    }

    fn decide(request: &Request, state: &TenantState) -> Verdict {
        let clock = &state.clock;
        let zone = &clock.time_zone;
        let local = clock.hh_mm();
        let verdict = if clock.is_weekday() && clock.between_hours(9, 18) {
            Verdict::admit(format!("business hours in {zone} ({local})"))
        } else if let Some(cheaper) = cheapest_downgrade(request) {
            Verdict::downgrade(
                cheaper.model_id.clone(),
                format!(
                    "outside business hours in {zone} ({local}): {} instead of {}",
                    cheaper.model_id, request.model_id
                ),
            )
        } else {
            Verdict::admit(format!(
                "outside business hours in {zone} ({local}); no cheaper model is configured"
            ))
        };
        verdict.with_metadata("local-time", local)
    }
}

export_policy!(BusinessHours);

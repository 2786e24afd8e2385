"""business-hours in Python: the same behaviour as the Rust example
(policies/examples/business-hours), checked by the same conformance cases.

Monday to Friday, 09:00 to 17:59 on the tenant's own clock, every call is
admitted as asked. Outside those hours a call goes to the cheapest model of
the operator's ``downgrade-chain`` that costs this call strictly less than the
requested model; with none, it is admitted. No parameters.
"""

from tollgate_policy import (
    Policy,
    admit,
    between_hours,
    cheapest_downgrade,
    downgrade,
    hh_mm,
    is_weekday,
    parse_config,
    with_metadata,
)


class WitWorld(Policy):
    def check_config(self, config):
        parse_config(config, {})

    def decide(self, request, state):
        clock = state.clock
        zone = clock.time_zone
        local = hh_mm(clock)
        if is_weekday(clock) and between_hours(clock, 9, 18):
            verdict = admit(f"business hours in {zone} ({local})")
        else:
            cheaper = cheapest_downgrade(request)
            if cheaper is not None:
                verdict = downgrade(
                    cheaper.model_id,
                    f"outside business hours in {zone} ({local}): {cheaper.model_id} instead of {request.model_id}",
                )
            else:
                verdict = admit(f"outside business hours in {zone} ({local}); no cheaper model is configured")
        return with_metadata(verdict, "local-time", local)

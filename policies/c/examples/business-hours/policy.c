/*
 * business-hours in C: premium models only in business hours.
 *
 * Monday to Friday, 09:00 to 17:59 on the tenant's own clock, every call is
 * admitted as asked. Outside those hours a call goes to the cheapest model
 * of the operator's `downgrade-chain` that costs this call strictly less
 * than the requested model; with none, it is admitted. No parameters: the
 * time zone is the tenant's and the chain is the operator's setting.
 */
#include "tollgate_policy.h"

const char *validate_config(tollgate_string config) { return tollgate_no_parameters(config); }

void decide(const tollgate_request *request, const tollgate_state *state, tollgate_verdict *verdict) {
    const tollgate_local_time *clock = &state->clock;
    const char *zone = tollgate_cstr(clock->time_zone);
    const char *local = tollgate_hh_mm(clock);
    const tollgate_model_option *cheaper;
    if (tollgate_is_weekday(clock) && clock->hour >= 9 && clock->hour < 18) {
        tollgate_admit(verdict, "business hours in %s (%s)", zone, local);
    } else if ((cheaper = tollgate_cheapest_downgrade(request)) != NULL) {
        const char *model = tollgate_cstr(cheaper->model_id);
        tollgate_downgrade(verdict, model, "outside business hours in %s (%s): %s instead of %.*s", zone, local, model,
                           TOLLGATE_STR(request->model_id));
    } else {
        tollgate_admit(verdict, "outside business hours in %s (%s); no cheaper model is configured", zone, local);
    }
    tollgate_add_metadata(verdict, "local-time", "%s", local);
}

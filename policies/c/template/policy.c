/*
 * A tollgate policy in C. Copy this folder, then:
 *
 *     tollgate policy build my-policy --tools .tools   # → my-policy/target/my_policy_c.wasm
 *
 * Rejects a call that would take committed spend past `max-percent` of the
 * budget; admits the rest. Every .c file of the folder is compiled with the
 * helper (policies/c/tollgate_policy.h), which the build provides.
 */
#include "tollgate_policy.h"

/* Reads and checks the tenant's parameters; NULL or what is wrong. */
static const char *load_config(tollgate_string text, uint64_t *max_percent) {
    *max_percent = 100;
    const tollgate_config_key keys[] = {
        {"max-percent", TOLLGATE_CONFIG_UINT, max_percent},
    };
    const char *problem = tollgate_parse_config(text, keys, 1);
    if (problem) return problem;
    if (*max_percent < 1 || *max_percent > 100) {
        return tollgate_format("max-percent is %llu; use 1 to 100", (unsigned long long)*max_percent);
    }
    return NULL;
}

const char *validate_config(tollgate_string config) {
    uint64_t max_percent;
    return load_config(config, &max_percent);
}

void decide(const tollgate_request *request, const tollgate_state *state, tollgate_verdict *verdict) {
    uint64_t max_percent;
    if (load_config(request->config, &max_percent)) {
        tollgate_reject(verdict, TOLLGATE_REJECT_DENIED, "invalid config");
        return;
    }
    uint64_t after = tollgate_saturating_add(tollgate_committed(&state->budget), request->worst_case_cost);
    uint64_t used = tollgate_percent_of(after, state->budget.limit);
    if (used > max_percent) {
        tollgate_reject(verdict, TOLLGATE_REJECT_BUDGET_EXHAUSTED, "this call would take spend to %llu%% of %s",
                        (unsigned long long)used, tollgate_format_usd(state->budget.limit));
        return;
    }
    tollgate_admit(verdict, "%llu%% of the budget with this call", (unsigned long long)used);
    tollgate_add_metadata(verdict, "budget-percent", "%llu", (unsigned long long)used);
}

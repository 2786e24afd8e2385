/*
 * budget-guard in C: the same behaviour as the Rust example
 * (policies/examples/budget-guard), checked by the same conformance cases.
 *
 * - Rejects once committed spend (spent + reserved) reaches
 *   `reject-at-percent` of the budget.
 * - Throttles until the next minute when the call's tokens would pass the
 *   tenant's tokens-per-minute limit.
 * - From `downgrade-at-percent` (counting this call's worst case), or when
 *   the alert level reaches `downgrade-on-alert`, moves the call one step
 *   down `downgrade-chain` to the next model that is actually cheaper.
 */
#include <string.h>

#include "tollgate_policy.h"

typedef struct {
    uint64_t downgrade_at_percent;
    uint64_t reject_at_percent;
    const char *downgrade_on_alert;
    tollgate_strings downgrade_chain;
} config;

static const char *DEFAULT_CHAIN[] = {
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "amazon.nova-micro-v1:0",
};

/* Reads and checks the tenant's parameters; NULL or what is wrong. */
static const char *load_config(tollgate_string text, config *c) {
    *c = (config){80, 100, "orange", {DEFAULT_CHAIN, 3}};
    const tollgate_config_key keys[] = {
        {"downgrade-at-percent", TOLLGATE_CONFIG_UINT, &c->downgrade_at_percent},
        {"reject-at-percent", TOLLGATE_CONFIG_UINT, &c->reject_at_percent},
        {"downgrade-on-alert", TOLLGATE_CONFIG_STRING, &c->downgrade_on_alert},
        {"downgrade-chain", TOLLGATE_CONFIG_STRINGS, &c->downgrade_chain},
    };
    const char *problem = tollgate_parse_config(text, keys, sizeof keys / sizeof keys[0]);
    if (problem) return problem;
    if (c->reject_at_percent == 0 || c->reject_at_percent > 100) {
        return tollgate_format("reject-at-percent is %llu; it must be between 1 and 100",
                               (unsigned long long)c->reject_at_percent);
    }
    if (c->downgrade_at_percent > c->reject_at_percent) {
        return tollgate_format("downgrade-at-percent is %llu; it must be at most reject-at-percent (%llu)",
                               (unsigned long long)c->downgrade_at_percent, (unsigned long long)c->reject_at_percent);
    }
    if (tollgate_alert_parse(c->downgrade_on_alert) < 0) {
        return tollgate_format("downgrade-on-alert is \"%s\"; use green, yellow, orange or red", c->downgrade_on_alert);
    }
    for (size_t i = 0; i < c->downgrade_chain.len; i++) {
        if (c->downgrade_chain.items[i][0] == '\0') return "downgrade-chain has an empty model id";
    }
    return NULL;
}

const char *validate_config(tollgate_string text) {
    config c;
    return load_config(text, &c);
}

/* The next model after `current` in the chain (or from the chain's start
 * when `current` is not in it) whose list price is below `current`'s. */
static const char *cheaper_model(const tollgate_strings *chain, const char *current) {
    size_t start = 0;
    for (size_t i = 0; i < chain->len; i++) {
        if (strcmp(chain->items[i], current) == 0) {
            start = i + 1;
            break;
        }
    }
    tollgate_model_price price;
    bool current_priced = tollgate_price(current, &price);
    uint64_t current_cost = current_priced ? tollgate_cost_of(&price, 1000000, 1000000) : 0;
    for (size_t i = start; i < chain->len; i++) {
        if (!tollgate_price(chain->items[i], &price)) continue;
        /* An unpriced current model: any priced model is a known cost. */
        if (!current_priced || tollgate_cost_of(&price, 1000000, 1000000) < current_cost) return chain->items[i];
    }
    return NULL;
}

void decide(const tollgate_request *request, const tollgate_state *state, tollgate_verdict *verdict) {
    config c;
    if (load_config(request->config, &c)) {
        /* validate_config accepted this config at load time. */
        tollgate_reject(verdict, TOLLGATE_REJECT_DENIED, "budget-guard: invalid config");
        return;
    }
    const tollgate_budget *budget = &state->budget;
    uint64_t committed = tollgate_committed(budget);
    uint64_t used = tollgate_percent_of(committed, budget->limit);
    if (used >= c.reject_at_percent) {
        tollgate_reject(verdict, TOLLGATE_REJECT_BUDGET_EXHAUSTED, "budget exhausted: %s of %s committed this period (%llu%%)",
                        tollgate_format_usd(committed), tollgate_format_usd(budget->limit), (unsigned long long)used);
        tollgate_add_metadata(verdict, "budget-percent", "%llu", (unsigned long long)used);
        return;
    }

    const tollgate_policy_types_rate_window_t *window = &state->window;
    uint64_t call_tokens = tollgate_saturating_add(request->estimated_input_tokens, request->max_output_tokens);
    if (window->tpm_limit.is_some && tollgate_saturating_add(window->tokens, call_tokens) > window->tpm_limit.val) {
        tollgate_throttle(verdict, tollgate_ms_until_next_minute(request->now_ms),
                          "tokens-per-minute limit %llu: %llu used this minute and this call needs up to %llu",
                          (unsigned long long)window->tpm_limit.val, (unsigned long long)window->tokens,
                          (unsigned long long)call_tokens);
        return;
    }

    uint64_t with_call = tollgate_percent_of(tollgate_saturating_add(committed, request->worst_case_cost), budget->limit);
    bool by_spend = with_call >= c.downgrade_at_percent;
    bool by_alert = state->alert >= tollgate_alert_parse(c.downgrade_on_alert);
    if (by_spend || by_alert) {
        const char *why = by_spend ? tollgate_format("%llu%% of the budget with this call (threshold %llu%%)",
                                                     (unsigned long long)with_call,
                                                     (unsigned long long)c.downgrade_at_percent)
                                   : tollgate_format("alert level %s", tollgate_alert_name(state->alert));
        const char *current = tollgate_cstr(request->base_model_id);
        const char *model = cheaper_model(&c.downgrade_chain, current);
        if (model) {
            tollgate_downgrade(verdict, model, "%s: downgraded from %s to %s", why, current, model);
        } else {
            tollgate_admit(verdict, "%s, but no cheaper model in the chain", why);
        }
    } else {
        tollgate_admit(verdict, "%llu%% of the %s budget used", (unsigned long long)used,
                       tollgate_format_usd(budget->limit));
    }
    tollgate_add_metadata(verdict, "budget-percent", "%llu", (unsigned long long)used);
}

/*
 * Write tollgate cost policies in C.
 *
 * A policy is one C file (or several) that defines two functions:
 *
 *     #include "tollgate_policy.h"
 *
 *     const char *validate_config(tollgate_string config) {
 *         return tollgate_no_parameters(config);  // NULL: accepted
 *     }
 *
 *     void decide(const tollgate_request *request, const tollgate_state *state, tollgate_verdict *verdict) {
 *         if (tollgate_committed(&state->budget) >= state->budget.limit) {
 *             tollgate_reject(verdict, TOLLGATE_REJECT_BUDGET_EXHAUSTED, "over budget");
 *             return;
 *         }
 *         tollgate_admit(verdict, "within budget");
 *     }
 *
 * Build with `tollgate policy build DIR`: it generates the bindings of the
 * contract (wit/policy.wit, the types below come from them), compiles every
 * .c file of DIR with this helper for WebAssembly, and wraps the module as a
 * component. The module imports nothing but the tollgate host: there is no
 * stdio, file, clock or randomness (printf and friends do not link; use
 * tollgate_log).
 *
 * Memory: the host may reuse an instance for many calls, so nothing may
 * leak. The helper frees the request and state after `decide` returns and
 * everything it handed out from its scratch space (tollgate_format,
 * tollgate_cstr, tollgate_format_usd, parsed config strings). The verdict's
 * strings are allocated here and freed by the component's post-return.
 * Money is integer nano-dollars (uint64_t) throughout: no floats.
 */
#ifndef TOLLGATE_POLICY_H
#define TOLLGATE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h" /* generated from the contract at build time */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The contract's types, under shorter names ------------------------ */

typedef policy_string_t tollgate_string; /* UTF-8, not NUL-terminated */
typedef uint64_t tollgate_nano_usd;
typedef policy_request_t tollgate_request;
typedef policy_tenant_state_t tollgate_state;
typedef policy_verdict_t tollgate_verdict;
typedef tollgate_policy_types_budget_t tollgate_budget;
typedef tollgate_policy_types_local_time_t tollgate_local_time;
typedef tollgate_policy_types_model_price_t tollgate_model_price;
typedef tollgate_policy_types_model_option_t tollgate_model_option;
typedef tollgate_policy_types_alert_level_t tollgate_alert_level;
typedef tollgate_policy_types_reject_kind_t tollgate_reject_kind;
typedef tollgate_policy_types_weekday_t tollgate_weekday;
typedef tollgate_policy_host_log_level_t tollgate_log_level;

#define TOLLGATE_ALERT_GREEN TOLLGATE_POLICY_TYPES_ALERT_LEVEL_GREEN
#define TOLLGATE_ALERT_YELLOW TOLLGATE_POLICY_TYPES_ALERT_LEVEL_YELLOW
#define TOLLGATE_ALERT_ORANGE TOLLGATE_POLICY_TYPES_ALERT_LEVEL_ORANGE
#define TOLLGATE_ALERT_RED TOLLGATE_POLICY_TYPES_ALERT_LEVEL_RED

#define TOLLGATE_REJECT_BUDGET_EXHAUSTED TOLLGATE_POLICY_TYPES_REJECT_KIND_BUDGET_EXHAUSTED
#define TOLLGATE_REJECT_QUOTA_EXCEEDED TOLLGATE_POLICY_TYPES_REJECT_KIND_QUOTA_EXCEEDED
#define TOLLGATE_REJECT_MODEL_NOT_ALLOWED TOLLGATE_POLICY_TYPES_REJECT_KIND_MODEL_NOT_ALLOWED
#define TOLLGATE_REJECT_DENIED TOLLGATE_POLICY_TYPES_REJECT_KIND_DENIED

#define TOLLGATE_LOG_TRACE TOLLGATE_POLICY_HOST_LOG_LEVEL_TRACE
#define TOLLGATE_LOG_DEBUG TOLLGATE_POLICY_HOST_LOG_LEVEL_DEBUG
#define TOLLGATE_LOG_INFO TOLLGATE_POLICY_HOST_LOG_LEVEL_INFO
#define TOLLGATE_LOG_WARN TOLLGATE_POLICY_HOST_LOG_LEVEL_WARN
#define TOLLGATE_LOG_ERROR TOLLGATE_POLICY_HOST_LOG_LEVEL_ERROR

#define TOLLGATE_NANOS_PER_USD 1000000000ULL

#if defined(__GNUC__) || defined(__clang__)
#define TOLLGATE_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TOLLGATE_PRINTF(f, a)
#endif

/* ---- What the policy defines ------------------------------------------ */

/* Decides one call. `verdict` starts as an admit with an empty reason; set
 * it with the tollgate_admit/downgrade/throttle/reject functions. Must be
 * pure: the same inputs give the same verdict. */
void decide(const tollgate_request *request, const tollgate_state *state, tollgate_verdict *verdict);

/* Checks the tenant's parameters (JSON, or "") once at load time. Returns
 * NULL to accept them, or a message that says what is wrong. */
const char *validate_config(tollgate_string config);

/* ---- Verdicts ----------------------------------------------------------- */
/* The reason is printf-formatted. Setting the action again replaces it. */

void tollgate_admit(tollgate_verdict *verdict, const char *reason, ...) TOLLGATE_PRINTF(2, 3);
/* Forward the call to the cheaper `model` instead. */
void tollgate_downgrade(tollgate_verdict *verdict, const char *model, const char *reason, ...)
    TOLLGATE_PRINTF(3, 4);
/* Refuse for now; the caller may retry after `retry_after_ms`. */
void tollgate_throttle(tollgate_verdict *verdict, uint64_t retry_after_ms, const char *reason, ...)
    TOLLGATE_PRINTF(3, 4);
void tollgate_reject(tollgate_verdict *verdict, tollgate_reject_kind kind, const char *reason, ...)
    TOLLGATE_PRINTF(3, 4);
/* Adds a requestMetadata pair (printf-formatted value) to the forwarded
 * call; the host keeps at most 8. */
void tollgate_add_metadata(tollgate_verdict *verdict, const char *key, const char *value, ...)
    TOLLGATE_PRINTF(3, 4);
/* Lowers the call's output token ceiling to at most `tokens` (at least 1). */
void tollgate_cap_output_tokens(tollgate_verdict *verdict, uint64_t tokens);

/* ---- Money (integer nano-dollars) -------------------------------------- */

/* Whole dollars / cents as nano-dollars (saturating). */
tollgate_nano_usd tollgate_usd(uint64_t dollars);
tollgate_nano_usd tollgate_cents(uint64_t cents);
/* `part` as a whole percentage of `whole`, rounded down; a zero `whole`
 * counts as 100% once anything is spent. */
uint64_t tollgate_percent_of(tollgate_nano_usd part, tollgate_nano_usd whole);
/* `part` in basis points (1/100 of a percent) of `whole`, rounded down. */
uint64_t tollgate_basis_points(tollgate_nano_usd part, tollgate_nano_usd whole);
/* Cost of `input` and `output` tokens at `price`, rounded up. */
tollgate_nano_usd tollgate_cost_of(const tollgate_model_price *price, uint64_t input, uint64_t output);
/* "$1,234.56"; amounts under a dollar that are not whole cents keep their
 * digits ("$0.0174"). Scratch memory. */
const char *tollgate_format_usd(tollgate_nano_usd amount);
/* a + b, or UINT64_MAX when it overflows. */
uint64_t tollgate_saturating_add(uint64_t a, uint64_t b);

/* ---- The tenant's state ----------------------------------------------- */

/* Spent plus reserved (saturating), and what is left of the limit. */
tollgate_nano_usd tollgate_committed(const tollgate_budget *budget);
tollgate_nano_usd tollgate_remaining(const tollgate_budget *budget);
/* "green", "yellow", "orange", "red"; parse gives -1 for anything else.
 * Levels compare as numbers: green < yellow < orange < red. */
const char *tollgate_alert_name(tollgate_alert_level level);
int tollgate_alert_parse(const char *name);
/* Milliseconds to the next one-minute window: the natural retry delay. */
uint64_t tollgate_ms_until_next_minute(uint64_t now_ms);
/* "monday" .. "sunday", and whether it is Monday to Friday. */
const char *tollgate_weekday_name(tollgate_weekday day);
bool tollgate_is_weekday(const tollgate_local_time *clock);
/* The local time as "HH:MM". Scratch memory. */
const char *tollgate_hh_mm(const tollgate_local_time *clock);
/* The cheapest entry of request->downgrade_chain whose worst case is
 * strictly below the requested model's (an unpriced requested model counts
 * as dearer than any priced one), the first on a tie; NULL if none. */
const tollgate_model_option *tollgate_cheapest_downgrade(const tollgate_request *request);

/* ---- The host ----------------------------------------------------------- */

/* Writes to the host's log (at most 16 lines of 1 KiB per decision). */
void tollgate_log(tollgate_log_level level, const char *message, ...) TOLLGATE_PRINTF(2, 3);
/* The model's standard on-demand price; false when the host does not know
 * it. */
bool tollgate_price(const char *model_id, tollgate_model_price *price);

/* ---- Strings and scratch memory --------------------------------------- */

/* For "%.*s": printf("%.*s", TOLLGATE_STR(request->model_id)). */
#define TOLLGATE_STR(s) (int)(s).len, (const char *)(s).ptr
bool tollgate_str_eq(tollgate_string s, const char *text);
/* A NUL-terminated copy of `s`. Scratch memory. */
const char *tollgate_cstr(tollgate_string s);
/* printf into scratch memory. */
const char *tollgate_format(const char *format, ...) TOLLGATE_PRINTF(1, 2);
/* Memory freed when the current decide or validate_config returns. */
void *tollgate_scratch(size_t size);

/* ---- Parameters (JSON) ------------------------------------------------- */

typedef enum {
    TOLLGATE_CONFIG_UINT,    /* uint64_t: a whole number >= 0 */
    TOLLGATE_CONFIG_BOOL,    /* bool */
    TOLLGATE_CONFIG_STRING,  /* const char * */
    TOLLGATE_CONFIG_STRINGS, /* tollgate_strings: a list of strings */
} tollgate_config_type;

typedef struct {
    const char **items;
    size_t len;
} tollgate_strings;

typedef struct {
    const char *key; /* kebab-case, e.g. "downgrade-at-percent" */
    tollgate_config_type type;
    void *value; /* holds the default; replaced by the tenant's value */
} tollgate_config_key;

/* Reads the JSON object `config` ("" or whitespace: the defaults stay) into
 * `keys`. Returns NULL, or a message naming the problem: an unknown key, a
 * value of the wrong type, or JSON that does not parse. Strings live in
 * scratch memory. */
const char *tollgate_parse_config(tollgate_string config, const tollgate_config_key *keys, size_t count);
/* For a policy without parameters: accepts "" and {}, refuses the rest. */
const char *tollgate_no_parameters(tollgate_string config);

#ifdef __cplusplus
}
#endif
#endif

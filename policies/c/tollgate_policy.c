/*
 * The C policy helper: the component's exports, verdict builders, money,
 * scratch memory and a small JSON reader for parameters. See
 * tollgate_policy.h.
 */
#include "tollgate_policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Scratch memory: freed when each export returns ------------------- */

typedef struct scratch_block {
    struct scratch_block *next;
    _Alignas(16) unsigned char data[];
} scratch_block;

static scratch_block *scratch_head;

void *tollgate_scratch(size_t size) {
    scratch_block *block = malloc(sizeof(scratch_block) + size);
    if (!block) abort();
    block->next = scratch_head;
    scratch_head = block;
    return block->data;
}

static void scratch_reset(void) {
    while (scratch_head) {
        scratch_block *next = scratch_head->next;
        free(scratch_head);
        scratch_head = next;
    }
}

static const char *vformat(const char *format, va_list args) {
    /* One pass for the usual short text; a second only for longer ones. */
    char buffer[256];
    va_list again;
    va_copy(again, args);
    int len = vsnprintf(buffer, sizeof buffer, format, args);
    if (len < 0) len = 0;
    char *out = tollgate_scratch((size_t)len + 1);
    if ((size_t)len < sizeof buffer) memcpy(out, buffer, (size_t)len + 1);
    else vsnprintf(out, (size_t)len + 1, format, again);
    va_end(again);
    return out;
}

const char *tollgate_format(const char *format, ...) {
    va_list args;
    va_start(args, format);
    const char *out = vformat(format, args);
    va_end(args);
    return out;
}

const char *tollgate_cstr(tollgate_string s) {
    char *out = tollgate_scratch(s.len + 1);
    if (s.len) memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return out;
}

bool tollgate_str_eq(tollgate_string s, const char *text) {
    size_t len = strlen(text);
    return s.len == len && (len == 0 || memcmp(s.ptr, text, len) == 0);
}

/* ---- The exports -------------------------------------------------------- */

void exports_policy_decide(policy_request_t *request, policy_tenant_state_t *state, policy_verdict_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->action.tag = TOLLGATE_POLICY_TYPES_ACTION_ADMIT;
    decide(request, state, ret);
    /* The arguments belong to the callee. */
    policy_request_free(request);
    policy_tenant_state_free(state);
    scratch_reset();
}

bool exports_policy_validate_config(policy_string_t *config, policy_string_t *err) {
    const char *problem = validate_config(*config);
    if (problem) policy_string_dup(err, problem);
    policy_string_free(config);
    scratch_reset();
    return problem == NULL;
}

/* ---- Verdicts ----------------------------------------------------------- */

/* Verdict strings are malloc'd: the post-return frees them. */
static void set_string(policy_string_t *field, const char *text) {
    policy_string_free(field);
    policy_string_dup(field, text);
}

static void set_action(policy_verdict_t *verdict, uint8_t tag, const char *reason) {
    tollgate_policy_types_action_free(&verdict->action);
    memset(&verdict->action, 0, sizeof verdict->action);
    verdict->action.tag = tag;
    set_string(&verdict->reason, reason);
}

void tollgate_admit(tollgate_verdict *verdict, const char *reason, ...) {
    va_list args;
    va_start(args, reason);
    set_action(verdict, TOLLGATE_POLICY_TYPES_ACTION_ADMIT, vformat(reason, args));
    va_end(args);
}

void tollgate_downgrade(tollgate_verdict *verdict, const char *model, const char *reason, ...) {
    va_list args;
    va_start(args, reason);
    set_action(verdict, TOLLGATE_POLICY_TYPES_ACTION_DOWNGRADE, vformat(reason, args));
    va_end(args);
    policy_string_dup(&verdict->action.val.downgrade, model);
}

void tollgate_throttle(tollgate_verdict *verdict, uint64_t retry_after_ms, const char *reason, ...) {
    va_list args;
    va_start(args, reason);
    set_action(verdict, TOLLGATE_POLICY_TYPES_ACTION_THROTTLE, vformat(reason, args));
    va_end(args);
    verdict->action.val.throttle = retry_after_ms;
}

void tollgate_reject(tollgate_verdict *verdict, tollgate_reject_kind kind, const char *reason, ...) {
    va_list args;
    va_start(args, reason);
    set_action(verdict, TOLLGATE_POLICY_TYPES_ACTION_REJECT, vformat(reason, args));
    va_end(args);
    verdict->action.val.reject = kind;
}

void tollgate_add_metadata(tollgate_verdict *verdict, const char *key, const char *value, ...) {
    va_list args;
    va_start(args, value);
    const char *text = vformat(value, args);
    va_end(args);
    policy_list_tuple2_string_string_t *list = &verdict->metadata;
    policy_tuple2_string_string_t *grown = realloc(list->ptr, (list->len + 1) * sizeof *grown);
    if (!grown) abort();
    list->ptr = grown;
    policy_string_dup(&grown[list->len].f0, key);
    policy_string_dup(&grown[list->len].f1, text);
    list->len++;
}

void tollgate_cap_output_tokens(tollgate_verdict *verdict, uint64_t tokens) {
    verdict->max_output_tokens.is_some = true;
    verdict->max_output_tokens.val = tokens ? tokens : 1;
}

/* ---- Money -------------------------------------------------------------- */

uint64_t tollgate_saturating_add(uint64_t a, uint64_t b) {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t saturating_mul(uint64_t a, uint64_t b) {
    unsigned __int128 product = (unsigned __int128)a * b;
    return product > UINT64_MAX ? UINT64_MAX : (uint64_t)product;
}

tollgate_nano_usd tollgate_usd(uint64_t dollars) { return saturating_mul(dollars, TOLLGATE_NANOS_PER_USD); }

tollgate_nano_usd tollgate_cents(uint64_t cents) { return saturating_mul(cents, TOLLGATE_NANOS_PER_USD / 100); }

uint64_t tollgate_basis_points(tollgate_nano_usd part, tollgate_nano_usd whole) {
    if (whole == 0) return part == 0 ? 0 : 10000;
    unsigned __int128 bp = (unsigned __int128)part * 10000 / whole;
    return bp > UINT64_MAX ? UINT64_MAX : (uint64_t)bp;
}

uint64_t tollgate_percent_of(tollgate_nano_usd part, tollgate_nano_usd whole) {
    return tollgate_basis_points(part, whole) / 100;
}

tollgate_nano_usd tollgate_cost_of(const tollgate_model_price *price, uint64_t input, uint64_t output) {
    unsigned __int128 total = (unsigned __int128)input * price->input + (unsigned __int128)output * price->output;
    unsigned __int128 nanos = (total + 999999) / 1000000;
    return nanos > UINT64_MAX ? UINT64_MAX : (uint64_t)nanos;
}

const char *tollgate_format_usd(tollgate_nano_usd amount) {
    uint64_t dollars = amount / TOLLGATE_NANOS_PER_USD;
    uint64_t nanos = amount % TOLLGATE_NANOS_PER_USD;
    if (dollars == 0 && nanos % (TOLLGATE_NANOS_PER_USD / 100) != 0) {
        char digits[10];
        snprintf(digits, sizeof digits, "%09llu", (unsigned long long)nanos);
        size_t len = 9;
        while (digits[len - 1] == '0') len--;
        return tollgate_format("$0.%.*s", (int)len, digits);
    }
    char plain[24], grouped[32];
    int len = snprintf(plain, sizeof plain, "%llu", (unsigned long long)dollars);
    size_t at = 0;
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0) grouped[at++] = ',';
        grouped[at++] = plain[i];
    }
    grouped[at] = '\0';
    return tollgate_format("$%s.%02llu", grouped, (unsigned long long)(nanos / (TOLLGATE_NANOS_PER_USD / 100)));
}

/* ---- The tenant's state ----------------------------------------------- */

tollgate_nano_usd tollgate_committed(const tollgate_budget *budget) {
    return tollgate_saturating_add(budget->spent, budget->reserved);
}

tollgate_nano_usd tollgate_remaining(const tollgate_budget *budget) {
    tollgate_nano_usd committed = tollgate_committed(budget);
    return budget->limit > committed ? budget->limit - committed : 0;
}

static const char *const ALERTS[] = {"green", "yellow", "orange", "red"};

const char *tollgate_alert_name(tollgate_alert_level level) { return level < 4 ? ALERTS[level] : "unknown"; }

int tollgate_alert_parse(const char *name) {
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, ALERTS[i]) == 0) return i;
    }
    return -1;
}

uint64_t tollgate_ms_until_next_minute(uint64_t now_ms) { return 60000 - now_ms % 60000; }

static const char *const WEEKDAYS[] = {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"};

const char *tollgate_weekday_name(tollgate_weekday day) { return day < 7 ? WEEKDAYS[day] : "unknown"; }

bool tollgate_is_weekday(const tollgate_local_time *clock) {
    return clock->weekday <= TOLLGATE_POLICY_TYPES_WEEKDAY_FRIDAY;
}

const char *tollgate_hh_mm(const tollgate_local_time *clock) {
    return tollgate_format("%02u:%02u", (unsigned)clock->hour, (unsigned)clock->minute);
}

const tollgate_model_option *tollgate_cheapest_downgrade(const tollgate_request *request) {
    const tollgate_policy_types_option_nano_usd_t *ceiling = &request->requested.worst_case_cost;
    const tollgate_model_option *best = NULL;
    for (size_t i = 0; i < request->downgrade_chain.len; i++) {
        const tollgate_model_option *option = &request->downgrade_chain.ptr[i];
        if (!option->worst_case_cost.is_some) continue;
        uint64_t cost = option->worst_case_cost.val;
        if (ceiling->is_some && cost >= ceiling->val) continue;
        if (!best || cost < best->worst_case_cost.val) best = option;
    }
    return best;
}

/* ---- The host ----------------------------------------------------------- */

void tollgate_log(tollgate_log_level level, const char *message, ...) {
    va_list args;
    va_start(args, message);
    policy_string_t text;
    policy_string_set(&text, vformat(message, args));
    va_end(args);
    tollgate_policy_host_log(level, &text);
}

bool tollgate_price(const char *model_id, tollgate_model_price *price) {
    policy_string_t id;
    policy_string_set(&id, model_id);
    return tollgate_policy_host_price(&id, price);
}

/* ---- Parameters: a small JSON reader ----------------------------------- */

typedef struct {
    const char *at;
    const char *end;
    const char *start;
    const char *error;
} json;

static void skip_space(json *j) {
    while (j->at < j->end && (*j->at == ' ' || *j->at == '\t' || *j->at == '\n' || *j->at == '\r')) j->at++;
}

static bool fail(json *j, const char *what) {
    if (!j->error) {
        j->error = tollgate_format("config is not valid JSON: %s at byte %zu", what, (size_t)(j->at - j->start));
    }
    return false;
}

static bool expect(json *j, char c) {
    skip_space(j);
    if (j->at < j->end && *j->at == c) {
        j->at++;
        return true;
    }
    return fail(j, tollgate_format("expected '%c'", c));
}

static int hex4(json *j) {
    if (j->end - j->at < 4) return -1;
    int value = 0;
    for (int i = 0; i < 4; i++) {
        char c = *j->at++;
        int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (digit < 0) return -1;
        value = value * 16 + digit;
    }
    return value;
}

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A JSON string, decoded into scratch memory (escapes never grow it). */
static const char *read_string(json *j) {
    if (!expect(j, '"')) return NULL;
    char *out = tollgate_scratch((size_t)(j->end - j->at) + 1);
    size_t len = 0;
    while (j->at < j->end && *j->at != '"') {
        unsigned char c = (unsigned char)*j->at++;
        if (c < 0x20) return fail(j, "a control character in a string"), NULL;
        if (c != '\\') {
            out[len++] = (char)c;
            continue;
        }
        if (j->at == j->end) break;
        char e = *j->at++;
        int cp;
        switch (e) {
        case '"': case '\\': case '/': out[len++] = e; break;
        case 'b': out[len++] = '\b'; break;
        case 'f': out[len++] = '\f'; break;
        case 'n': out[len++] = '\n'; break;
        case 'r': out[len++] = '\r'; break;
        case 't': out[len++] = '\t'; break;
        case 'u':
            cp = hex4(j);
            if (cp < 0) return fail(j, "a bad \\u escape"), NULL;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int low = j->end - j->at >= 2 && j->at[0] == '\\' && j->at[1] == 'u' ? (j->at += 2, hex4(j)) : -1;
                if (low < 0xDC00 || low > 0xDFFF) return fail(j, "a lone surrogate"), NULL;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(j, "a lone surrogate"), NULL;
            }
            if (cp == 0) return fail(j, "a NUL character in a string"), NULL;
            len += put_utf8(out + len, (uint32_t)cp);
            break;
        default: return fail(j, "a bad escape"), NULL;
        }
    }
    if (j->at == j->end) return fail(j, "an unterminated string"), NULL;
    j->at++;
    out[len] = '\0';
    return out;
}

/* What the next value is, in words, for error messages. */
static const char *kind_of(json *j) {
    skip_space(j);
    if (j->at == j->end) return "nothing";
    switch (*j->at) {
    case '"': return "a string";
    case '{': return "an object";
    case '[': return "a list";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    case '-': return "a negative number";
    default: break;
    }
    for (const char *p = j->at; p < j->end && strchr("0123456789.eE+-", *p); p++) {
        if (*p == '.' || *p == 'e' || *p == 'E') return "a fractional number";
    }
    return *j->at >= '0' && *j->at <= '9' ? "a number" : "something else";
}

static bool literal(json *j, const char *word) {
    size_t len = strlen(word);
    if ((size_t)(j->end - j->at) >= len && memcmp(j->at, word, len) == 0) {
        j->at += len;
        return true;
    }
    return false;
}

static bool wrong_type(json *j, const char *key, const char *wanted, const char *got) {
    j->error = tollgate_format("config key \"%s\" must be %s, not %s", key, wanted, got);
    return false;
}

static bool read_value(json *j, const tollgate_config_key *key) {
    const char *got = kind_of(j);
    switch (key->type) {
    case TOLLGATE_CONFIG_UINT: {
        if (strcmp(got, "a number") != 0) return wrong_type(j, key->key, "a whole number of 0 or more", got);
        if (*j->at == '0' && j->end - j->at > 1 && j->at[1] >= '0' && j->at[1] <= '9') {
            return fail(j, "a number with a leading zero");
        }
        uint64_t value = 0;
        while (j->at < j->end && *j->at >= '0' && *j->at <= '9') {
            uint64_t digit = (uint64_t)(*j->at++ - '0');
            if (value > (UINT64_MAX - digit) / 10) {
                return wrong_type(j, key->key, "a whole number of 0 or more", "a number too large");
            }
            value = value * 10 + digit;
        }
        *(uint64_t *)key->value = value;
        return true;
    }
    case TOLLGATE_CONFIG_BOOL:
        if (literal(j, "true")) *(bool *)key->value = true;
        else if (literal(j, "false")) *(bool *)key->value = false;
        else return wrong_type(j, key->key, "true or false", got);
        return true;
    case TOLLGATE_CONFIG_STRING: {
        if (strcmp(got, "a string") != 0) return wrong_type(j, key->key, "a string", got);
        const char *text = read_string(j);
        if (!text) return false;
        *(const char **)key->value = text;
        return true;
    }
    case TOLLGATE_CONFIG_STRINGS: {
        if (strcmp(got, "a list") != 0) return wrong_type(j, key->key, "a list of strings", got);
        j->at++;
        tollgate_strings list = {tollgate_scratch(sizeof(const char *)), 0};
        size_t room = 1;
        skip_space(j);
        if (j->at < j->end && *j->at == ']') {
            j->at++;
        } else {
            for (;;) {
                const char *item_kind = kind_of(j);
                if (strcmp(item_kind, "a string") != 0) {
                    return wrong_type(j, key->key, "a list of strings", tollgate_format("a list holding %s", item_kind));
                }
                const char *item = read_string(j);
                if (!item) return false;
                if (list.len == room) {
                    const char **bigger = tollgate_scratch(2 * room * sizeof(const char *));
                    memcpy(bigger, list.items, room * sizeof(const char *));
                    list.items = bigger;
                    room *= 2;
                }
                list.items[list.len++] = item;
                skip_space(j);
                if (j->at < j->end && *j->at == ',') {
                    j->at++;
                    continue;
                }
                if (!expect(j, ']')) return false;
                break;
            }
        }
        *(tollgate_strings *)key->value = list;
        return true;
    }
    }
    return false;
}

static const char *expected_keys(const tollgate_config_key *keys, size_t count) {
    if (count == 0) return "this policy takes no parameters";
    const char *list = "expected one of ";
    for (size_t i = 0; i < count; i++) list = tollgate_format("%s%s%s", list, i ? ", " : "", keys[i].key);
    return list;
}

const char *tollgate_parse_config(tollgate_string config, const tollgate_config_key *keys, size_t count) {
    json j = {(const char *)config.ptr, (const char *)config.ptr + config.len, (const char *)config.ptr, NULL};
    skip_space(&j);
    if (j.at == j.end) return NULL;
    if (*j.at != '{') return count ? "config must be a JSON object" : "config must be a JSON object; this policy takes no parameters";
    j.at++;
    bool *seen = tollgate_scratch(count + 1);
    memset(seen, 0, count + 1);
    skip_space(&j);
    if (j.at < j.end && *j.at == '}') {
        j.at++;
    } else {
        for (;;) {
            const char *name = read_string(&j);
            if (!name) return j.error;
            size_t i = 0;
            while (i < count && strcmp(keys[i].key, name) != 0) i++;
            if (i == count) return tollgate_format("unknown config key \"%s\"; %s", name, expected_keys(keys, count));
            if (seen[i]) return tollgate_format("config key \"%s\" is given twice", name);
            seen[i] = true;
            if (!expect(&j, ':') || !read_value(&j, &keys[i])) return j.error;
            skip_space(&j);
            if (j.at < j.end && *j.at == ',') {
                j.at++;
                continue;
            }
            if (!expect(&j, '}')) return j.error;
            break;
        }
    }
    skip_space(&j);
    if (j.at != j.end) return fail(&j, "trailing characters"), j.error;
    return NULL;
}

const char *tollgate_no_parameters(tollgate_string config) { return tollgate_parse_config(config, NULL, 0); }

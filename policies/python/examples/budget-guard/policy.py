"""budget-guard in Python: the same behaviour as the Rust example
(policies/examples/budget-guard), checked by the same conformance cases.

- Rejects once committed spend (spent + reserved) reaches
  ``reject-at-percent`` of the budget.
- Throttles until the next minute when the call's tokens would pass the
  tenant's tokens-per-minute limit.
- From ``downgrade-at-percent`` (counting this call's worst case), or when the
  alert level reaches ``downgrade-on-alert``, moves the call one step down
  ``downgrade-chain`` to the next model that is actually cheaper.
"""

from tollgate_policy import (
    Policy,
    RejectKind,
    admit,
    alert_level,
    alert_name,
    alert_rank,
    committed,
    cost_of,
    downgrade,
    format_usd,
    ms_until_next_minute,
    parse_config,
    percent_of,
    price,
    reject,
    throttle,
    with_metadata,
)

DEFAULTS = {
    "downgrade-at-percent": 80,
    "reject-at-percent": 100,
    "downgrade-on-alert": "orange",
    "downgrade-chain": [
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "amazon.nova-micro-v1:0",
    ],
}


def load_config(text: str) -> dict:
    config = parse_config(text, DEFAULTS)
    reject_at = config["reject-at-percent"]
    downgrade_at = config["downgrade-at-percent"]
    if reject_at <= 0 or reject_at > 100:
        raise ValueError(f"reject-at-percent is {reject_at}; it must be between 1 and 100")
    if downgrade_at < 0 or downgrade_at > reject_at:
        raise ValueError(f"downgrade-at-percent is {downgrade_at}; it must be at most reject-at-percent ({reject_at})")
    if alert_level(config["downgrade-on-alert"]) is None:
        raise ValueError(f"downgrade-on-alert is {config['downgrade-on-alert']!r}; use green, yellow, orange or red")
    if any(not isinstance(m, str) or not m for m in config["downgrade-chain"]):
        raise ValueError("downgrade-chain has an empty model id")
    return config


# The checked config of the last text seen: a tenant's config is the same on
# every call. It depends only on the text, so a reused instance decides like a
# fresh one; decide only reads it.
_checked = (None, None)


def checked_config(text: str) -> dict:
    global _checked
    if _checked[0] != text:
        _checked = (text, load_config(text))
    return _checked[1]


def cheaper_model(chain, current):
    """The next model after ``current`` in ``chain`` (or from the chain's
    start when ``current`` is not in it) whose list price is below it."""
    start = chain.index(current) + 1 if current in chain else 0
    current_price = price(current)
    current_cost = cost_of(current_price, 1_000_000, 1_000_000) if current_price else None
    for candidate in chain[start:]:
        candidate_price = price(candidate)
        if candidate_price is None:
            continue
        # An unpriced current model: any priced model is a known cost.
        if current_cost is None or cost_of(candidate_price, 1_000_000, 1_000_000) < current_cost:
            return candidate
    return None


class WitWorld(Policy):
    def check_config(self, config):
        load_config(config)

    def decide(self, request, state):
        try:
            config = checked_config(request.config)
        except ValueError:
            # validate-config accepted this config at load time.
            return reject(RejectKind.DENIED, "budget-guard: invalid config")
        budget = state.budget
        spent = committed(budget)
        used = percent_of(spent, budget.limit)
        if used >= config["reject-at-percent"]:
            return with_metadata(
                reject(
                    RejectKind.BUDGET_EXHAUSTED,
                    f"budget exhausted: {format_usd(spent)} of {format_usd(budget.limit)} committed this period ({used}%)",
                ),
                "budget-percent",
                str(used),
            )

        window = state.window
        call_tokens = request.estimated_input_tokens + request.max_output_tokens
        tpm = window.tpm_limit
        if tpm is not None and window.tokens + call_tokens > tpm:
            return throttle(
                ms_until_next_minute(request.now_ms),
                f"tokens-per-minute limit {tpm}: {window.tokens} used this minute and this call needs up to {call_tokens}",
            )

        with_call = percent_of(spent + request.worst_case_cost, budget.limit)
        by_spend = with_call >= config["downgrade-at-percent"]
        by_alert = alert_rank(state.alert) >= alert_rank(alert_level(config["downgrade-on-alert"]))
        if by_spend or by_alert:
            if by_spend:
                why = f"{with_call}% of the budget with this call (threshold {config['downgrade-at-percent']}%)"
            else:
                why = f"alert level {alert_name(state.alert)}"
            model = cheaper_model(config["downgrade-chain"], request.base_model_id)
            if model is not None:
                verdict = downgrade(model, f"{why}: downgraded from {request.base_model_id} to {model}")
            else:
                verdict = admit(f"{why}, but no cheaper model in the chain")
            return with_metadata(verdict, "budget-percent", str(used))
        return with_metadata(
            admit(f"{used}% of the {format_usd(budget.limit)} budget used"), "budget-percent", str(used)
        )

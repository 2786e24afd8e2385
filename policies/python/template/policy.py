"""A tollgate policy in Python. Copy this folder, then:

    tollgate policy build my-policy --tools .tools   # → my-policy/target/my_policy_py.wasm

Rejects a call that would take committed spend past ``max-percent`` of the
budget; admits the rest.
"""

from tollgate_policy import (
    Policy,
    RejectKind,
    admit,
    committed,
    format_usd,
    parse_config,
    percent_of,
    reject,
    with_metadata,
)

DEFAULTS = {"max-percent": 100}


def load_config(text):
    config = parse_config(text, DEFAULTS)
    if not 1 <= config["max-percent"] <= 100:
        raise ValueError(f"max-percent is {config['max-percent']}; use 1 to 100")
    return config


class WitWorld(Policy):
    def check_config(self, config):
        load_config(config)

    def decide(self, request, state):
        config = load_config(request.config)
        after = committed(state.budget) + request.worst_case_cost
        used = percent_of(after, state.budget.limit)
        if used > config["max-percent"]:
            return reject(RejectKind.BUDGET_EXHAUSTED, f"this call would take spend to {used}% of {format_usd(state.budget.limit)}")
        return with_metadata(admit(f"{used}% of the budget with this call"), "budget-percent", str(used))

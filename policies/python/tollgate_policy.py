"""Write tollgate cost policies in Python.

A policy module defines ``class WitWorld(tollgate_policy.Policy)`` with a
``decide(self, request, state)`` method returning a verdict built with
``admit``, ``downgrade``, ``throttle`` or ``reject``. ``tollgate policy build``
compiles it, with this module, into a WebAssembly component.

Money is integer nano-dollars (1 USD = 1_000_000_000) everywhere: Python
ints are exact, so never divide money with ``/`` (a float); use ``//`` or the
helpers below.

The tenant's local time arrives as ``state.clock`` (see ``is_weekday``,
``hh_mm``); the requested model and the operator's downgrade chain arrive
priced for this call as ``request.requested`` and ``request.downgrade_chain``
(see ``cheapest_downgrade``).
"""

import enum
import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host
from wit_world.imports.host import LogLevel
from wit_world.imports.types import (
    Action_Admit,
    Action_Downgrade,
    Action_Reject,
    Action_Throttle,
    AlertLevel,
    Budget,
    CacheLocation,
    CachePoint,
    CacheTtl,
    LatencyMode,
    LocalTime,
    ModelOption,
    ModelPrice,
    Operation,
    Period,
    RejectKind,
    Request,
    ServiceTier,
    TenantState,
    Verdict,
    Weekday,
)

__all__ = [
    "AlertLevel", "Budget", "CacheLocation", "CachePoint", "CacheTtl", "LatencyMode", "LocalTime",
    "LogLevel", "ModelOption", "ModelPrice", "Operation", "Period", "Policy", "RejectKind", "Request",
    "ServiceTier", "TenantState", "Verdict", "Weekday", "NANOS_PER_USD", "admit", "alert_level",
    "alert_name", "alert_rank", "basis_points", "between_hours", "cache_location_name", "cache_ttl_name",
    "cents", "cheapest_downgrade", "committed", "cost_of", "downgrade", "format_usd", "hh_mm",
    "is_weekday", "is_weekend", "latency_mode_name", "local_date", "log", "ms_until_next_minute",
    "parse_config", "percent_of", "price", "reject", "remaining", "service_tier_name", "throttle",
    "usd", "weekday_name", "with_metadata",
]

NANOS_PER_USD = 1_000_000_000
U64_MAX = (1 << 64) - 1


# --- cheaper calls ------------------------------------------------------------
# Every call lifts the request's and the state's enums by calling their class
# with the value (``AlertLevel(2)``): Enum's generic constructor is two Python
# calls with keyword handling, several microseconds per decision on the
# WebAssembly interpreter. The contract's enums get a metaclass whose call is
# a dict lookup for a known value and the generic constructor otherwise, so
# they behave exactly as before.

class _ContractEnumType(type(AlertLevel)):
    def __call__(cls, value, *args, **kwargs):
        if not args and not kwargs:
            try:
                return cls._value2member_map_[value]
            except (KeyError, TypeError):
                pass
        return super().__call__(value, *args, **kwargs)


for _enum in (AlertLevel, CacheLocation, CacheTtl, LatencyMode, LogLevel, Operation, Period, RejectKind,
              ServiceTier, Weekday):
    if type(_enum) is enum.EnumType:
        _enum.__class__ = _ContractEnumType
del _enum


class Policy(wit_world.WitWorld):
    """Base class of a policy: override ``decide`` and, when the policy has
    parameters, ``check_config`` (raise ``ValueError`` saying what is wrong)."""

    def decide(self, request: Request, state: TenantState) -> Verdict:
        raise NotImplementedError("a policy must define decide(self, request, state)")

    def check_config(self, config: str) -> None:
        """Accepts everything unless overridden."""

    def validate_config(self, config: str) -> None:
        try:
            self.check_config(config)
        except ValueError as err:
            raise Err(str(err))


# --- money ----------------------------------------------------------------

def usd(dollars: int) -> int:
    """Whole dollars as nano-dollars."""
    return min(dollars * NANOS_PER_USD, U64_MAX)


def cents(amount: int) -> int:
    """Cents as nano-dollars."""
    return min(amount * (NANOS_PER_USD // 100), U64_MAX)


def basis_points(part: int, whole: int) -> int:
    """``part`` in 1/100 of a percent of ``whole``, rounded down; a zero
    budget counts as full once anything is spent."""
    if whole == 0:
        return 0 if part == 0 else 10_000
    return part * 10_000 // whole


def percent_of(part: int, whole: int) -> int:
    """``part`` as a whole percentage of ``whole``, rounded down."""
    return basis_points(part, whole) // 100


def cost_of(model_price: ModelPrice, input_tokens: int, output_tokens: int) -> int:
    """Cost of the tokens at a price per million tokens, rounded up."""
    total = input_tokens * model_price.input + output_tokens * model_price.output
    return min(-(-total // 1_000_000), U64_MAX)


def format_usd(amount: int) -> str:
    """``$1,234.56`` for reasons; small amounts keep their digits (``$0.0174``)."""
    dollars, nanos = divmod(amount, NANOS_PER_USD)
    if dollars == 0 and nanos % (NANOS_PER_USD // 100) != 0:
        return "$0." + f"{nanos:09d}".rstrip("0")
    return f"${dollars:,}.{nanos // (NANOS_PER_USD // 100):02d}"


def committed(budget: Budget) -> int:
    """Spent plus reserved: what the tenant has committed this period."""
    return min(budget.spent + budget.reserved, U64_MAX)


def remaining(budget: Budget) -> int:
    """What is left of the limit after committed spend (0 when over)."""
    return max(budget.limit - committed(budget), 0)


def ms_until_next_minute(now_ms: int) -> int:
    """Milliseconds to the next one-minute window: the natural retry delay."""
    return 60_000 - now_ms % 60_000


# --- alert levels ----------------------------------------------------------

_ALERT_NAMES = {AlertLevel.GREEN: "green", AlertLevel.YELLOW: "yellow", AlertLevel.ORANGE: "orange", AlertLevel.RED: "red"}
_ALERT_BY_NAME = {name: level for level, name in _ALERT_NAMES.items()}


def alert_rank(level: AlertLevel) -> int:
    """Orders levels green (0) < yellow < orange < red (3)."""
    # ``_value_`` is what ``value`` returns, without the descriptor call.
    return level._value_


def alert_name(level: AlertLevel) -> str:
    return _ALERT_NAMES[level]


def alert_level(name: str):
    """``"orange"`` → ``AlertLevel.ORANGE``; ``None`` for an unknown name."""
    return _ALERT_BY_NAME.get(name)


# --- the tenant's clock (state.clock) ----------------------------------------
# The host works out the local time from the tenant's IANA zone, daylight
# saving included; a policy has no clock or zone database of its own.

def is_weekend(clock: LocalTime) -> bool:
    """Saturday or Sunday on the tenant's calendar."""
    return clock.weekday in (Weekday.SATURDAY, Weekday.SUNDAY)


def is_weekday(clock: LocalTime) -> bool:
    """Monday to Friday on the tenant's calendar."""
    return not is_weekend(clock)


def between_hours(clock: LocalTime, start_hour: int, end_hour: int) -> bool:
    """Whether the local time is in ``[start_hour:00, end_hour:00)``, e.g.
    ``between_hours(clock, 9, 18)`` for 09:00 to 17:59."""
    return start_hour <= clock.hour < end_hour


def hh_mm(clock: LocalTime) -> str:
    """The local time as ``"09:30"``."""
    return f"{clock.hour:02d}:{clock.minute:02d}"


def local_date(clock: LocalTime) -> str:
    """The local date as ``"2026-03-09"``."""
    return f"{clock.year:04d}-{clock.month:02d}-{clock.day:02d}"


def weekday_name(day: Weekday) -> str:
    """``"monday"`` .. ``"sunday"``."""
    return day.name.lower()


# --- the models this call could go to -----------------------------------------

def cheapest_downgrade(request: Request):
    """The cheapest ``request.downgrade_chain`` entry (a ``ModelOption``) whose
    worst case is strictly below the requested model's, or ``None``. An
    unpriced requested model counts as dearer than any priced one; unpriced
    entries are skipped; the first of equals wins a tie."""
    ceiling = request.requested.worst_case_cost
    best = None
    for option in request.downgrade_chain:
        cost = option.worst_case_cost
        if cost is None or (ceiling is not None and cost >= ceiling):
            continue
        if best is None or cost < best.worst_case_cost:
            best = option
    return best


def service_tier_name(tier: ServiceTier) -> str:
    """``"standard"``, ``"priority"``, ``"flex"`` or ``"reserved"``."""
    return tier.name.lower()


def latency_mode_name(mode: LatencyMode) -> str:
    """``"standard"`` or ``"optimized"``."""
    return mode.name.lower()


def cache_location_name(location: CacheLocation) -> str:
    """``"system"``, ``"messages"`` or ``"tools"``."""
    return location.name.lower()


def cache_ttl_name(ttl: CacheTtl) -> str:
    """``"5m"`` or ``"1h"``, as Bedrock spells them."""
    return "1h" if ttl == CacheTtl.ONE_HOUR else "5m"


# --- verdicts -------------------------------------------------------------

def admit(reason: str) -> Verdict:
    return Verdict(Action_Admit(), reason, [], None)


def downgrade(model_id: str, reason: str) -> Verdict:
    return Verdict(Action_Downgrade(model_id), reason, [], None)


def throttle(retry_after_ms: int, reason: str) -> Verdict:
    return Verdict(Action_Throttle(retry_after_ms), reason, [], None)


def reject(kind: RejectKind, reason: str) -> Verdict:
    return Verdict(Action_Reject(kind), reason, [], None)


def with_metadata(verdict: Verdict, key: str, value: str) -> Verdict:
    """Adds a ``requestMetadata`` pair to attach to the forwarded call."""
    verdict.metadata.append((key, value))
    return verdict


# --- parameters and host functions ------------------------------------------

# The last config parsed, per instance: a tenant's config is the same text on
# every call, so parsing and checking it once is enough. The result depends
# only on the text and the defaults, so a reused instance still decides like
# a fresh one; callers get a copy, never the memo itself.
_config_memo = None


def _copy_json(value):
    if type(value) is list:
        return [_copy_json(v) for v in value]
    if type(value) is dict:
        return {k: _copy_json(v) for k, v in value.items()}
    return value


def parse_config(text: str, defaults: dict) -> dict:
    """The tenant's JSON parameters over ``defaults``. Unknown keys and values
    of another type than the default's are refused with ``ValueError``. A
    policy without parameters passes ``{}``: it accepts ``""`` and ``"{}"``.

    The result is a new dict each call (lists and objects in it are copies
    too), so a policy may change it freely."""
    global _config_memo
    memo = _config_memo
    if memo is not None and memo[0] == text and memo[1] is defaults and memo[2] == defaults:
        return _copy_json(memo[3])
    config = _parse_config(text, defaults)
    _config_memo = (text, defaults, _copy_json(defaults), config)
    return _copy_json(config)


def _parse_config(text: str, defaults: dict) -> dict:
    if not text.strip():
        return _copy_json(defaults)
    try:
        given = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"config is not valid JSON: {err}")
    if not isinstance(given, dict):
        raise ValueError("config must be a JSON object" + ("" if defaults else "; this policy takes no parameters"))
    config = _copy_json(defaults)
    for key, value in given.items():
        if key not in defaults:
            if not defaults:
                raise ValueError(f"unknown config key {json.dumps(key)}; this policy takes no parameters")
            raise ValueError(f"unknown config key {key!r}; expected one of {', '.join(sorted(defaults))}")
        expected = type(defaults[key])
        if type(value) is not expected:
            raise ValueError(f"config key {key!r} must be a {expected.__name__}, not {type(value).__name__}")
        config[key] = value
    return config


def price(model_id: str):
    """The model's standard on-demand price (nano-dollars per million tokens),
    or ``None``. This call's own tier and options are priced in
    ``request.requested`` and ``request.downgrade_chain``."""
    return host.price(model_id)


def log(level: LogLevel, message: str) -> None:
    """Writes to the host's log (at most 16 lines of 1 KiB per decision)."""
    host.log(level, message)

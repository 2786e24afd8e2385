// Write tollgate cost policies in JavaScript.
//
// A policy module exports `decide` and `validateConfig` made by
// `definePolicy`; `tollgate policy build` bundles it with this module and
// compiles it into a WebAssembly component:
//
//   import { definePolicy, admit } from "tollgate-policy";
//   export const { decide, validateConfig } = definePolicy({
//     decide(request, state) { return admit("ok"); },
//   });
//
// Money is integer nano-dollars. Every u64 of the contract (money, tokens,
// times) reaches the policy as a BigInt, whichever JavaScript engine runs it:
// StarlingMonkey passes BigInt, QuickJS passes Number, and this module hides
// the difference in both directions. Under QuickJS a u64 above 2^53 cannot be
// represented exactly; rather than decide on a rounded figure the call fails
// (the tenant's failure mode applies).
//
// Enums reach the policy as their WIT names ("monday", "flex", "one-hour"),
// options as a value or null. The tenant's local time is `state.clock` (see
// `isWeekday`, `hhMm`); the requested model and the operator's downgrade
// chain come priced for this call as `request.requested` and
// `request.downgradeChain` (see `cheapestDowngrade`).

import * as hostModule from "tollgate:policy/host@0.2.0";

// StarlingMonkey exposes an interface's functions as named exports, QuickJS
// as one default object.
const host = typeof hostModule.price === "function" ? hostModule : hostModule.default;

export const NANOS_PER_USD = 1_000_000_000n;
const U64_MAX = (1n << 64n) - 1n;

// Whether this engine passes u64 as BigInt; learnt from the first call.
let u64IsBigInt = true;

function big(value, field) {
  if (typeof value === "bigint") return value;
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`${field} = ${value} is not exactly representable in this JavaScript engine`);
  }
  return BigInt(value);
}

function bigOrNull(value, field) {
  return value === null || value === undefined ? null : big(value, field);
}

// A u64 as the engine expects it back.
function toAbi(value, field) {
  const v = big(value, field);
  if (v < 0n || v > U64_MAX) throw new RangeError(`${field} = ${v} is outside u64`);
  return u64IsBigInt ? v : Number(v);
}

const PRICE_FIELDS = ["input", "output", "cacheRead", "cacheWrite", "cacheWriteLong"];

// A `model-price` with BigInt fields, or null.
function liftPrice(p, field) {
  if (p === null || p === undefined) return null;
  const out = {};
  for (const f of PRICE_FIELDS) out[f] = big(p[f], `${field}.${f}`);
  return out;
}

// A `model-option` with its price and worst case as BigInt (or null).
function liftOption(o, field) {
  return {
    modelId: o.modelId,
    price: liftPrice(o.price, `${field}.price`),
    worstCaseCost: bigOrNull(o.worstCaseCost, `${field}.worstCaseCost`),
  };
}

function liftRequest(r) {
  u64IsBigInt = typeof r.nowMs === "bigint";
  for (const f of ["estimatedInputTokens", "maxOutputTokens", "worstCaseCost", "nowMs"]) {
    r[f] = big(r[f], `request.${f}`);
  }
  r.requested = liftOption(r.requested, "request.requested");
  r.downgradeChain = r.downgradeChain.map((o, i) => liftOption(o, `request.downgradeChain[${i}]`));
  return r;
}

function liftState(s) {
  for (const f of ["includedTokens", "usedTokens"]) s.plan[f] = big(s.plan[f], `plan.${f}`);
  for (const f of ["limit", "spent", "reserved", "periodStartMs", "periodEndMs"]) {
    s.budget[f] = big(s.budget[f], `budget.${f}`);
  }
  for (const f of ["burnRateShort", "burnRateLong", "baselineBurnRate", "forecastSpend"]) {
    s.indicators[f] = big(s.indicators[f], `indicators.${f}`);
  }
  s.window.tokens = big(s.window.tokens, "window.tokens");
  s.window.tpmLimit = bigOrNull(s.window.tpmLimit, "window.tpmLimit");
  s.window.rpmLimit = s.window.rpmLimit ?? null;
  return s;
}

function lowerVerdict(v) {
  const action = v.action.tag === "throttle" ? { tag: "throttle", val: toAbi(v.action.val, "throttle") } : v.action;
  const cap = v.maxOutputTokens;
  return {
    action,
    reason: String(v.reason),
    metadata: v.metadata.map(([k, val]) => [String(k), String(val)]),
    maxOutputTokens: cap === null || cap === undefined ? undefined : toAbi(cap, "maxOutputTokens"),
  };
}

/// Turns `{ decide, validateConfig? }` into the component's exports.
/// `validateConfig(config)` throws an Error saying what is wrong.
export function definePolicy({ decide, validateConfig }) {
  return {
    decide(request, state) {
      return lowerVerdict(decide(liftRequest(request), liftState(state)));
    },
    validateConfig(config) {
      if (!validateConfig) return;
      try {
        validateConfig(config);
      } catch (err) {
        // Both engines turn a thrown string into the `err` of the result.
        throw err instanceof Error ? err.message : String(err);
      }
    },
  };
}

// --- money ----------------------------------------------------------------

/// Whole dollars as nano-dollars.
export const usd = (dollars) => BigInt(dollars) * NANOS_PER_USD;
/// Cents as nano-dollars.
export const cents = (amount) => BigInt(amount) * (NANOS_PER_USD / 100n);

/// `part` in 1/100 of a percent of `whole`, rounded down; a zero budget
/// counts as full once anything is spent.
export function basisPoints(part, whole) {
  if (whole === 0n) return part === 0n ? 0n : 10_000n;
  return (part * 10_000n) / whole;
}

/// `part` as a whole percentage of `whole`, rounded down.
export const percentOf = (part, whole) => basisPoints(part, whole) / 100n;

/// Cost of tokens at a price per million tokens, rounded up.
export function costOf(price, inputTokens, outputTokens) {
  const total = BigInt(inputTokens) * price.input + BigInt(outputTokens) * price.output;
  const cost = (total + 999_999n) / 1_000_000n;
  return cost > U64_MAX ? U64_MAX : cost;
}

/// `$1,234.56` for reasons; small amounts keep their digits (`$0.0174`).
export function formatUsd(amount) {
  const dollars = amount / NANOS_PER_USD;
  const nanos = amount % NANOS_PER_USD;
  const cent = NANOS_PER_USD / 100n;
  if (dollars === 0n && nanos % cent !== 0n) {
    return "$0." + nanos.toString().padStart(9, "0").replace(/0+$/, "");
  }
  const grouped = dollars.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `$${grouped}.${(nanos / cent).toString().padStart(2, "0")}`;
}

/// Spent plus reserved: what the tenant has committed this period.
export const committed = (budget) => budget.spent + budget.reserved;
/// What is left of the limit after committed spend (0 when over).
export const remaining = (budget) => (budget.limit > committed(budget) ? budget.limit - committed(budget) : 0n);
/// Milliseconds to the next one-minute window: the natural retry delay.
export const msUntilNextMinute = (nowMs) => 60_000n - (nowMs % 60_000n);

// --- alert levels -----------------------------------------------------------

const ALERTS = ["green", "yellow", "orange", "red"];
/// Orders levels green (0) < yellow < orange < red (3); -1 for an unknown name.
export const alertRank = (level) => ALERTS.indexOf(level);

// --- the tenant's clock (state.clock) ----------------------------------------
// The host works out the local time from the tenant's IANA zone, daylight
// saving included; a policy needs no zone database of its own.

/// Saturday or Sunday on the tenant's calendar.
export const isWeekend = (clock) => clock.weekday === "saturday" || clock.weekday === "sunday";
/// Monday to Friday on the tenant's calendar.
export const isWeekday = (clock) => !isWeekend(clock);
/// Whether the local time is in `[startHour:00, endHour:00)`, e.g.
/// `betweenHours(clock, 9, 18)` for 09:00 to 17:59.
export const betweenHours = (clock, startHour, endHour) => clock.hour >= startHour && clock.hour < endHour;
const pad = (n, width) => String(n).padStart(width, "0");
/// The local time as "09:30".
export const hhMm = (clock) => `${pad(clock.hour, 2)}:${pad(clock.minute, 2)}`;
/// The local date as "2026-03-09".
export const localDate = (clock) => `${pad(clock.year, 4)}-${pad(clock.month, 2)}-${pad(clock.day, 2)}`;

// --- the models this call could go to -----------------------------------------

/// The cheapest `request.downgradeChain` entry whose worst case is strictly
/// below the requested model's, or null. An unpriced requested model counts
/// as dearer than any priced one; unpriced entries are skipped; the first of
/// equals wins a tie.
export function cheapestDowngrade(request) {
  const ceiling = request.requested.worstCaseCost;
  let best = null;
  for (const option of request.downgradeChain) {
    const cost = option.worstCaseCost;
    if (cost === null || (ceiling !== null && cost >= ceiling)) continue;
    if (best === null || cost < best.worstCaseCost) best = option;
  }
  return best;
}

// --- verdicts ---------------------------------------------------------------

const verdict = (action, reason) => ({ action, reason, metadata: [], maxOutputTokens: null });
export const admit = (reason) => verdict({ tag: "admit" }, reason);
export const downgrade = (modelId, reason) => verdict({ tag: "downgrade", val: modelId }, reason);
export const throttle = (retryAfterMs, reason) => verdict({ tag: "throttle", val: retryAfterMs }, reason);
/// `kind`: "budget-exhausted", "quota-exceeded", "model-not-allowed" or "denied".
export const reject = (kind, reason) => verdict({ tag: "reject", val: kind }, reason);

/// Adds a `requestMetadata` pair to attach to the forwarded call.
export function withMetadata(v, key, value) {
  v.metadata.push([key, String(value)]);
  return v;
}

// --- parameters and host functions -------------------------------------------

/// The tenant's JSON parameters over `defaults`. Unknown keys and values of
/// another type than the default's throw an Error. A policy without
/// parameters passes `{}`: it accepts "" and "{}".
export function parseConfig(text, defaults) {
  if (text.trim() === "") return { ...defaults };
  let given;
  try {
    given = JSON.parse(text);
  } catch (err) {
    throw new Error(`config is not valid JSON: ${err.message}`);
  }
  if (given === null || typeof given !== "object" || Array.isArray(given)) {
    const none = Object.keys(defaults).length === 0 ? "; this policy takes no parameters" : "";
    throw new Error(`config must be a JSON object${none}`);
  }
  const config = { ...defaults };
  for (const [key, value] of Object.entries(given)) {
    if (!Object.prototype.hasOwnProperty.call(defaults, key)) {
      if (Object.keys(defaults).length === 0) {
        throw new Error(`unknown config key ${JSON.stringify(key)}; this policy takes no parameters`);
      }
      throw new Error(`unknown config key "${key}"; expected one of ${Object.keys(defaults).sort().join(", ")}`);
    }
    const expected = Array.isArray(defaults[key]) ? "array" : typeof defaults[key];
    const actual = Array.isArray(value) ? "array" : typeof value;
    if (expected !== actual) throw new Error(`config key "${key}" must be a ${expected}, not ${actual}`);
    config[key] = value;
  }
  return config;
}

/// The model's standard on-demand price in nano-dollars per million tokens
/// (BigInt fields `input`, `output`, `cacheRead`, `cacheWrite`,
/// `cacheWriteLong`), or null. This call's own tier and options are priced
/// in `request.requested` and `request.downgradeChain`.
export const price = (modelId) => liftPrice(host.price(modelId), "price");

/// Writes to the host's log (at most 16 lines of 1 KiB per decision).
/// `level`: "trace", "debug", "info", "warn" or "error".
export function log(level, message) {
  host.log(level, String(message));
}

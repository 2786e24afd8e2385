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

// Whether this engine passes u64 as BigInt; learnt from every call.
let u64IsBigInt = true;

// Lifting runs on every call, so it allocates nothing it does not return: no
// field-name arrays, iterators or closures, and an error message's field name
// is only spelt out when a value cannot be converted.

function notExact(field, value) {
  return new RangeError(`${field} = ${value} is not exactly representable in this JavaScript engine`);
}

function big(value, field) {
  if (typeof value === "bigint") return value;
  if (!Number.isSafeInteger(value)) throw notExact(field, value);
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

// Where a lifted value sits, for an error message: a field name, or the
// index of a model option (-1: `request.requested`, else
// `request.downgradeChain[i]`) with `.price` when `price` is set.
function fieldName(where, price, name) {
  if (typeof where === "string") return `${where}.${name}`;
  const option = where < 0 ? "request.requested" : `request.downgradeChain[${where}]`;
  return `${option}${price ? ".price" : ""}.${name}`;
}

// A u64 as a BigInt; the field's name is only spelt out for the error.
function bigAt(value, where, price, name) {
  if (typeof value === "bigint") return value;
  if (!Number.isSafeInteger(value)) throw notExact(fieldName(where, price, name), value);
  return BigInt(value);
}

// A `model-price` with BigInt fields, or null.
function liftPrice(p, where) {
  if (p === null || p === undefined) return null;
  return {
    input: bigAt(p.input, where, true, "input"),
    output: bigAt(p.output, where, true, "output"),
    cacheRead: bigAt(p.cacheRead, where, true, "cacheRead"),
    cacheWrite: bigAt(p.cacheWrite, where, true, "cacheWrite"),
    cacheWriteLong: bigAt(p.cacheWriteLong, where, true, "cacheWriteLong"),
  };
}

// A `model-option` with its price and worst case as BigInt (or null).
function liftOption(o, index) {
  const cost = o.worstCaseCost;
  return {
    modelId: o.modelId,
    price: liftPrice(o.price, index),
    worstCaseCost: cost === null || cost === undefined ? null : bigAt(cost, index, false, "worstCaseCost"),
  };
}

function liftRequest(r) {
  u64IsBigInt = typeof r.nowMs === "bigint";
  r.estimatedInputTokens = big(r.estimatedInputTokens, "request.estimatedInputTokens");
  r.maxOutputTokens = big(r.maxOutputTokens, "request.maxOutputTokens");
  r.worstCaseCost = big(r.worstCaseCost, "request.worstCaseCost");
  r.nowMs = big(r.nowMs, "request.nowMs");
  r.requested = liftOption(r.requested, -1);
  const chain = r.downgradeChain;
  const lifted = new Array(chain.length);
  for (let i = 0; i < chain.length; i++) lifted[i] = liftOption(chain[i], i);
  r.downgradeChain = lifted;
  return r;
}

function liftState(s) {
  const plan = s.plan;
  plan.includedTokens = big(plan.includedTokens, "plan.includedTokens");
  plan.usedTokens = big(plan.usedTokens, "plan.usedTokens");
  const budget = s.budget;
  budget.limit = big(budget.limit, "budget.limit");
  budget.spent = big(budget.spent, "budget.spent");
  budget.reserved = big(budget.reserved, "budget.reserved");
  budget.periodStartMs = big(budget.periodStartMs, "budget.periodStartMs");
  budget.periodEndMs = big(budget.periodEndMs, "budget.periodEndMs");
  const ind = s.indicators;
  ind.burnRateShort = big(ind.burnRateShort, "indicators.burnRateShort");
  ind.burnRateLong = big(ind.burnRateLong, "indicators.burnRateLong");
  ind.baselineBurnRate = big(ind.baselineBurnRate, "indicators.baselineBurnRate");
  ind.forecastSpend = big(ind.forecastSpend, "indicators.forecastSpend");
  const w = s.window;
  w.tokens = big(w.tokens, "window.tokens");
  w.tpmLimit = bigOrNull(w.tpmLimit, "window.tpmLimit");
  w.rpmLimit = w.rpmLimit ?? null;
  return s;
}

function lowerVerdict(v) {
  const action = v.action.tag === "throttle" ? { tag: "throttle", val: toAbi(v.action.val, "throttle") } : v.action;
  const cap = v.maxOutputTokens;
  return {
    action,
    reason: String(v.reason),
    metadata: lowerMetadata(v.metadata),
    maxOutputTokens: cap === null || cap === undefined ? undefined : toAbi(cap, "maxOutputTokens"),
  };
}

function lowerMetadata(pairs) {
  const out = new Array(pairs.length);
  for (let i = 0; i < pairs.length; i++) {
    const pair = pairs[i];
    out[i] = [String(pair[0]), String(pair[1])];
  }
  return out;
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

// "1234567" as "1,234,567", without a regular expression (slow to run).
function groupThousands(digits) {
  let out = digits.length > 3 ? digits.slice(0, ((digits.length - 1) % 3) + 1) : digits;
  for (let i = out.length; i < digits.length; i += 3) out += "," + digits.slice(i, i + 3);
  return out;
}

/// `$1,234.56` for reasons; small amounts keep their digits (`$0.0174`).
export function formatUsd(amount) {
  const dollars = amount / NANOS_PER_USD;
  const nanos = amount % NANOS_PER_USD;
  const cent = NANOS_PER_USD / 100n;
  if (dollars === 0n && nanos % cent !== 0n) {
    return "$0." + nanos.toString().padStart(9, "0").replace(/0+$/, "");
  }
  const grouped = groupThousands(dollars.toString());
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

// The last config parsed, per instance: a tenant's config is the same text on
// every call, so parsing and checking it once is enough. The result depends
// only on the text and the defaults, so a reused instance still decides like
// a fresh one; callers get a copy, never the memo itself.
let configMemo = null;

function copyJson(value) {
  if (Array.isArray(value)) return value.map(copyJson);
  if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const out = {};
    for (const key of Object.keys(value)) out[key] = copyJson(value[key]);
    return out;
  }
  return value;
}

/// The tenant's JSON parameters over `defaults`. Unknown keys and values of
/// another type than the default's throw an Error. A policy without
/// parameters passes `{}`: it accepts "" and "{}". The result is a new
/// object each call (arrays and objects in it are copies too), so a policy
/// may change it freely.
export function parseConfig(text, defaults) {
  const memo = configMemo;
  if (memo !== null && memo.text === text && memo.defaults === defaults) return copyJson(memo.config);
  const config = parseConfigText(text, defaults);
  configMemo = { text, defaults, config: copyJson(config) };
  return config;
}

function parseConfigText(text, defaults) {
  if (text.trim() === "") return copyJson(defaults);
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
  const config = copyJson(defaults);
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

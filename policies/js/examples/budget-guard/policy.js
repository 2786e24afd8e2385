// budget-guard in JavaScript: the same behaviour as the Rust example
// (policies/examples/budget-guard), checked by the same conformance cases.
//
// - Rejects once committed spend (spent + reserved) reaches
//   `reject-at-percent` of the budget.
// - Throttles until the next minute when the call's tokens would pass the
//   tenant's tokens-per-minute limit.
// - From `downgrade-at-percent` (counting this call's worst case), or when the
//   alert level reaches `downgrade-on-alert`, moves the call one step down
//   `downgrade-chain` to the next model that is actually cheaper.

import {
  admit,
  alertRank,
  committed,
  costOf,
  definePolicy,
  downgrade,
  formatUsd,
  msUntilNextMinute,
  parseConfig,
  percentOf,
  price,
  reject,
  throttle,
  withMetadata,
} from "tollgate-policy";

const DEFAULTS = {
  "downgrade-at-percent": 80,
  "reject-at-percent": 100,
  "downgrade-on-alert": "orange",
  "downgrade-chain": [
    "anthropic.claude-sonnet-4-20250514-v1:0",
    "anthropic.claude-3-5-haiku-20241022-v1:0",
    "amazon.nova-micro-v1:0",
  ],
};

function loadConfig(text) {
  const config = parseConfig(text, DEFAULTS);
  const rejectAt = config["reject-at-percent"];
  const downgradeAt = config["downgrade-at-percent"];
  if (!Number.isInteger(rejectAt) || rejectAt <= 0 || rejectAt > 100) {
    throw new Error(`reject-at-percent is ${rejectAt}; it must be between 1 and 100`);
  }
  if (!Number.isInteger(downgradeAt) || downgradeAt < 0 || downgradeAt > rejectAt) {
    throw new Error(`downgrade-at-percent is ${downgradeAt}; it must be at most reject-at-percent (${rejectAt})`);
  }
  if (alertRank(config["downgrade-on-alert"]) < 0) {
    throw new Error(`downgrade-on-alert is "${config["downgrade-on-alert"]}"; use green, yellow, orange or red`);
  }
  if (config["downgrade-chain"].some((m) => typeof m !== "string" || m === "")) {
    throw new Error("downgrade-chain has an empty model id");
  }
  return config;
}

// The checked config of the last text seen: a tenant's config is the same on
// every call. It depends only on the text, so a reused instance decides like a
// fresh one; the policy only reads it.
let checked = { text: null, config: null };

function checkedConfig(text) {
  if (checked.text !== text) checked = { text, config: loadConfig(text) };
  return checked.config;
}

// The next model after `current` in `chain` (or from the chain's start when
// `current` is not in it) whose list price is below it.
function cheaperModel(chain, current) {
  const start = chain.indexOf(current) + 1;
  const currentPrice = price(current);
  const currentCost = currentPrice && costOf(currentPrice, 1_000_000, 1_000_000);
  for (const candidate of chain.slice(start)) {
    const p = price(candidate);
    if (p === null) continue;
    // An unpriced current model: any priced model is a known cost.
    if (currentCost === null || costOf(p, 1_000_000, 1_000_000) < currentCost) return candidate;
  }
  return null;
}

function budgetGuard(request, state) {
  let config;
  try {
    config = checkedConfig(request.config);
  } catch {
    // validate-config accepted this config at load time.
    return reject("denied", "budget-guard: invalid config");
  }
  const budget = state.budget;
  const spent = committed(budget);
  const used = percentOf(spent, budget.limit);
  if (used >= BigInt(config["reject-at-percent"])) {
    return withMetadata(
      reject(
        "budget-exhausted",
        `budget exhausted: ${formatUsd(spent)} of ${formatUsd(budget.limit)} committed this period (${used}%)`,
      ),
      "budget-percent",
      used,
    );
  }

  const window = state.window;
  const callTokens = request.estimatedInputTokens + request.maxOutputTokens;
  const tpm = window.tpmLimit;
  if (tpm !== null && window.tokens + callTokens > tpm) {
    return throttle(
      msUntilNextMinute(request.nowMs),
      `tokens-per-minute limit ${tpm}: ${window.tokens} used this minute and this call needs up to ${callTokens}`,
    );
  }

  const withCall = percentOf(spent + request.worstCaseCost, budget.limit);
  const bySpend = withCall >= BigInt(config["downgrade-at-percent"]);
  const byAlert = alertRank(state.alert) >= alertRank(config["downgrade-on-alert"]);
  if (bySpend || byAlert) {
    const why = bySpend
      ? `${withCall}% of the budget with this call (threshold ${config["downgrade-at-percent"]}%)`
      : `alert level ${state.alert}`;
    const model = cheaperModel(config["downgrade-chain"], request.baseModelId);
    const verdict =
      model !== null
        ? downgrade(model, `${why}: downgraded from ${request.baseModelId} to ${model}`)
        : admit(`${why}, but no cheaper model in the chain`);
    return withMetadata(verdict, "budget-percent", used);
  }
  return withMetadata(admit(`${used}% of the ${formatUsd(budget.limit)} budget used`), "budget-percent", used);
}

export const { decide, validateConfig } = definePolicy({ decide: budgetGuard, validateConfig: loadConfig });

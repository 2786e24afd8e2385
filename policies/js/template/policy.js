// A tollgate policy in JavaScript. Copy this folder, then:
//
//   tollgate policy build my-policy --tools .tools   # → my-policy/target/my_policy_js.wasm
//
// Rejects a call that would take committed spend past `max-percent` of the
// budget; admits the rest. Money and token counts are BigInt.

import { admit, committed, definePolicy, formatUsd, parseConfig, percentOf, reject, withMetadata } from "tollgate-policy";

const DEFAULTS = { "max-percent": 100 };

function loadConfig(text) {
  const config = parseConfig(text, DEFAULTS);
  const max = config["max-percent"];
  if (!Number.isInteger(max) || max < 1 || max > 100) throw new Error(`max-percent is ${max}; use 1 to 100`);
  return config;
}

export const { decide, validateConfig } = definePolicy({
  validateConfig: loadConfig,
  decide(request, state) {
    const config = loadConfig(request.config);
    const after = committed(state.budget) + request.worstCaseCost;
    const used = percentOf(after, state.budget.limit);
    if (used > BigInt(config["max-percent"])) {
      return reject("budget-exhausted", `this call would take spend to ${used}% of ${formatUsd(state.budget.limit)}`);
    }
    return withMetadata(admit(`${used}% of the budget with this call`), "budget-percent", used);
  },
});

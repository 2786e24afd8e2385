// business-hours in JavaScript: the same behaviour as the Rust example
// (policies/examples/business-hours), checked by the same conformance cases.
//
// Monday to Friday, 09:00 to 17:59 on the tenant's own clock, every call is
// admitted as asked. Outside those hours a call goes to the cheapest model of
// the operator's `downgrade-chain` that costs this call strictly less than
// the requested model; with none, it is admitted. No parameters.

import {
  admit,
  betweenHours,
  cheapestDowngrade,
  definePolicy,
  downgrade,
  hhMm,
  isWeekday,
  parseConfig,
  withMetadata,
} from "tollgate-policy";

function businessHours(request, state) {
  const clock = state.clock;
  const zone = clock.timeZone;
  const local = hhMm(clock);
  let verdict;
  if (isWeekday(clock) && betweenHours(clock, 9, 18)) {
    verdict = admit(`business hours in ${zone} (${local})`);
  } else {
    const cheaper = cheapestDowngrade(request);
    verdict =
      cheaper !== null
        ? downgrade(
            cheaper.modelId,
            `outside business hours in ${zone} (${local}): ${cheaper.modelId} instead of ${request.modelId}`,
          )
        : admit(`outside business hours in ${zone} (${local}); no cheaper model is configured`);
  }
  return withMetadata(verdict, "local-time", local);
}

export const { decide, validateConfig } = definePolicy({
  decide: businessHours,
  validateConfig: (config) => parseConfig(config, {}),
});

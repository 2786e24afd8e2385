// Hostile (a bug, really): throws on every call. The host must apply the
// tenant's failure mode, and show the operator the exception and its stack.
import { definePolicy } from "tollgate-policy";

function budgetShare(state) {
  throw new RangeError(`no budget share for ${state.plan.tier}`);
}

export const { decide, validateConfig } = definePolicy({
  decide(request, state) {
    return budgetShare(state);
  },
});

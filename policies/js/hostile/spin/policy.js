// Hostile: never returns. The host must stop it at the tenant's deadline.
import { definePolicy } from "tollgate-policy";

export const { decide, validateConfig } = definePolicy({
  decide() {
    let n = 0;
    for (;;) n++;
  },
});

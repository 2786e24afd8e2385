// Hostile: allocates until something stops it. The host must stop it at the
// tenant's memory cap.
import { definePolicy } from "tollgate-policy";

export const { decide, validateConfig } = definePolicy({
  decide() {
    const hoard = [];
    for (;;) hoard.push(new Uint8Array(1 << 20).fill(hoard.length));
  },
});

"""Hostile: keeps 256 KiB per call in a module-level list, so a reused
instance's heap grows with every call (as an interpreter's heap creeps up
over thousands of real calls). The host must retire the instance before it
reaches its memory cap, so no decision fails."""

from tollgate_policy import Policy, admit

KEPT = []


class WitWorld(Policy):
    def decide(self, request, state):
        KEPT.append(bytearray(256 << 10))
        return admit(f"kept {len(KEPT)} blocks")

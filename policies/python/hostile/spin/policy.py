"""Hostile: never returns. The host must stop it at the tenant's deadline."""

from tollgate_policy import Policy


class WitWorld(Policy):
    def decide(self, request, state):
        n = 0
        while True:
            n += 1

"""Hostile: allocates until something stops it. The host must stop it at the
tenant's memory cap."""

from tollgate_policy import Policy


class WitWorld(Policy):
    def decide(self, request, state):
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))

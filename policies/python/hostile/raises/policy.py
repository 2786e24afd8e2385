"""Hostile (a bug, really): raises on every call. The host must apply the
tenant's failure mode, and show the operator this traceback."""

from tollgate_policy import Policy


def budget_share(state):
    return state.budget.spent / 0


class WitWorld(Policy):
    def decide(self, request, state):
        return budget_share(state)

"""Per-worker budgets for what requests hold at once: body bytes, decode memory, queued decodes.

A budget that is full answers 503 with `Retry-After` at once instead of queueing without bound:
one worker's memory stays under the sum of its budgets whatever the clients send. Each grant
is released when the request ends (`release_all`, called by the front door in one place), or,
for decoding in a thread, when the thread ends, since such work cannot be cancelled.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from service.request_body import ClientError

HELD_KEY = "mnist.held"  # the ASGI scope's list of (budget, amount) grants of this request


class Budget:
    """A counter with a capacity; not thread-safe: take and release on the event loop."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name, self.capacity, self.used = name, capacity, 0

    def take(self, amount: int) -> None:
        """Grant `amount` or raise 503 (413 if it could never fit)."""
        if amount > self.capacity:
            raise ClientError(
                413, f"the request needs {amount:,} of the {self.name} budget of {self.capacity:,}"
            )
        if self.used + amount > self.capacity:
            raise ClientError(
                503,
                f"the server is busy ({self.name} budget full); retry shortly",
                headers={"retry-after": "1"},
            )
        self.used += amount

    def release(self, amount: int) -> None:
        self.used -= amount


def hold(scope: MutableMapping[str, Any], budget: Budget, amount: int) -> None:
    """Take `amount` from `budget` for the rest of the request whose ASGI scope this is."""
    budget.take(amount)
    scope.setdefault(HELD_KEY, []).append((budget, amount))


def release_all(scope: MutableMapping[str, Any]) -> None:
    for budget, amount in scope.pop(HELD_KEY, ()):
        budget.release(amount)

"""Round robin: each endpoint in turn, whatever its load."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from flotilla.balancing.base import Endpoint, RequestView

__all__ = ["RoundRobin"]


class RoundRobin:
    """Cycles through the endpoints in the order the caller lists them.

    The endpoint set may grow or shrink between calls (health, breakers), so
    the strategy keeps no index into it: an ever-increasing counter taken
    modulo the current length is always in range.  When the set changes the
    cycle shifts once; evenness over time is what matters, not the phase.
    """

    __slots__ = ("_next",)

    def __init__(self) -> None:
        # itertools.count's __next__ is one C call, so two threads sharing a
        # strategy can never read the same value (``self.n += 1`` could).
        self._next = itertools.count().__next__

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        return endpoints[self._next() % len(endpoints)]

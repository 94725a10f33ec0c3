"""Round robin: each endpoint in turn, whatever its load."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

from flotilla.balancing.base import Endpoint, RequestView

__all__ = ["RoundRobin"]


class RoundRobin:
    """Cycles through the endpoints in the order the caller lists them.

    The endpoint set may grow or shrink between calls (health, breakers), so
    the strategy keeps no index into it: an ever-increasing counter taken
    modulo the current length is always in range.  When the set changes the
    cycle shifts once; evenness over time is what matters, not the phase.

    There is one counter per service: a caller may use one strategy for every
    service it calls, and with a shared counter, calls alternating between two
    services would send every call to one of them to the same endpoint.
    """

    __slots__ = ("_counters",)

    def __init__(self) -> None:
        self._counters: dict[str, Iterator[int]] = {}

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        service = endpoints[0].instance.service
        counter = self._counters.get(service)
        if counter is None:
            # setdefault: two threads starting the same service share one counter.
            counter = self._counters.setdefault(service, itertools.count())
        # next() on itertools.count is one C call, so two threads can never read
        # the same value (``self.n += 1`` could).
        return endpoints[next(counter) % len(endpoints)]

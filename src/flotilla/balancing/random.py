"""Uniform random choice: no state, no feedback, no herd."""

from __future__ import annotations

# This module is flotilla.balancing.random; imports are absolute, so this is the
# standard library's module, not this one.
import random as _random
from collections.abc import Sequence

from flotilla.balancing.base import Endpoint, RequestView

__all__ = ["Random"]


class Random:
    """Picks any available endpoint with equal probability.

    ``rng`` makes the choice reproducible in tests; by default each strategy
    has its own generator rather than sharing the module-global one.
    """

    __slots__ = ("_random",)

    def __init__(self, rng: _random.Random | None = None) -> None:
        self._random = (rng or _random.Random()).random

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        # int(random() * n) never reaches n for n < 2**53 and is cheaper than randrange.
        return endpoints[int(self._random() * len(endpoints))]

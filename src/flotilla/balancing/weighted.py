"""Random choice in proportion to each endpoint's ``weight`` metadata."""

from __future__ import annotations

import random
from collections.abc import Sequence

from flotilla.balancing.base import Endpoint, RequestView

__all__ = ["Weighted"]


class Weighted:
    """Picks an endpoint with probability ``weight / sum(weights)``.

    Random rather than nginx's smooth weighted round robin: the endpoints
    passed in change from call to call (health, breakers), and smooth WRR
    keeps a running score per endpoint that would have to be reconciled with
    every new set, and is skewed each time it is.  A weighted draw needs no
    state, is right for whatever set it is given, and is reproducible with a
    seeded ``rng``.  Over thousands of calls the two spread traffic the same.
    """

    __slots__ = ("_random",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = (rng or random.Random()).random

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        # Two passes over a handful of endpoints beat building a cumulative list.
        total = 0.0
        for endpoint in endpoints:
            total += endpoint.weight
        point = self._random() * total
        for endpoint in endpoints:
            point -= endpoint.weight
            if point < 0.0:
                return endpoint
        # Rounding can leave ``point`` a hair above zero after the last weight.
        return endpoints[-1]

"""Power of two choices over peak-EWMA cost: the default strategy.

Picking the least loaded of *all* endpoints sends every caller to the same
"best" replica at once (each caller's view is a little stale), which then
becomes the worst.  Picking the better of two chosen at random keeps most of the
benefit (the maximum load drops from log n / log log n to log log n, Mitzenmacher
2001) and avoids the herd.  Finagle and Linkerd balance this way.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from flotilla.balancing.base import Endpoint, RequestView

__all__ = ["PeakEwma"]


class PeakEwma:
    """Of two distinct endpoints drawn at random, pick the one with the lower :meth:`Endpoint.cost`.

    ``rng`` makes the draws reproducible in tests; by default each strategy has
    its own generator so no global random state is shared or reseeded.
    """

    __slots__ = ("_random",)

    def __init__(self, rng: random.Random | None = None) -> None:
        # Bound once: this runs on every call, and the attribute lookup shows.
        self._random = (rng or random.Random()).random

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        n = len(endpoints)
        if n == 1:
            return endpoints[0]
        # int(random() * n) is about twice as fast as randrange(n) and never
        # reaches n for n < 2**53.  Drawing the second index from n - 1 slots and
        # skipping over the first makes the pair distinct without a retry loop.
        i = int(self._random() * n)
        j = int(self._random() * (n - 1))
        if j >= i:
            j += 1
        a = endpoints[i]
        b = endpoints[j]
        # One clock read for both, so the comparison is not skewed by the time
        # that passes between two reads.
        now = time.monotonic()
        return a if a.cost(now) <= b.cost(now) else b

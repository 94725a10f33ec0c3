"""What a method's latency is lately: a small decaying histogram per method, for hedging.

A hedge goes out once the first attempt has taken longer than most do (the
method's p95, say).  That percentile must follow the method as it changes, cost
little per call and take bounded memory, so each method gets a histogram of
fixed, geometric buckets whose counts halve every ``half_life`` seconds::

    bucket i holds samples in (bound[i-1], bound[i]];  bound[i] = FIRST * GROWTH**i

A percentile is the upper bound of the bucket where the cumulative count
reaches it: at most ``GROWTH - 1`` (20 %) above the true value, never below it,
so a hedge errs on the late side.  Recording is one binary search and an add;
the halving is done lazily, once per half-life that passed, over ~80 buckets.
"""

from __future__ import annotations

import bisect
import math

from flotilla.clock import Clock

__all__ = ["FIRST", "GROWTH", "DecayingHistogram", "LatencyTracker"]

FIRST = 0.00005
"""Upper bound of the first bucket (50 µs): no RPC answers faster."""
GROWTH = 1.2
"""Each bucket's bound is this much the previous one's: the percentile's resolution."""
LAST = 120.0
"""Samples above the last bound are counted in the last bucket."""
_BOUNDS: tuple[float, ...] = tuple(
    FIRST * GROWTH**i for i in range(math.ceil(math.log(LAST / FIRST, GROWTH)) + 1)
)


class DecayingHistogram:
    """Latency samples of one method, older ones weighing less (see the module docstring)."""

    __slots__ = ("_counts", "_epoch", "_now", "half_life", "min_samples", "total")

    def __init__(self, clock: Clock, *, half_life: float = 10.0, min_samples: float = 20) -> None:
        if half_life <= 0:
            raise ValueError(f"half_life must be positive, not {half_life}")
        self.half_life = half_life
        self.min_samples = min_samples
        """Below this (decayed) count there is no estimate: a hedge on two samples is a guess."""
        self._now = clock.monotonic
        self._counts = [0.0] * len(_BOUNDS)
        self._epoch = int(self._now() // half_life)
        self.total = 0.0
        """The decayed count of samples."""

    def record(self, seconds: float) -> None:
        """Add one sample (seconds)."""
        self._decay()
        index = min(bisect.bisect_left(_BOUNDS, seconds), len(_BOUNDS) - 1)
        self._counts[index] += 1.0
        self.total += 1.0

    def percentile(self, fraction: float) -> float | None:
        """The latency ``fraction`` (0.95: p95) of the samples are at most; None: too few."""
        self._decay()
        if self.total < self.min_samples:
            return None
        wanted = fraction * self.total
        seen = 0.0
        for bound, count in zip(_BOUNDS, self._counts, strict=True):
            seen += count
            if seen >= wanted:
                return bound
        return _BOUNDS[-1]

    @staticmethod
    def bound(seconds: float) -> float:
        """The upper bound of the bucket ``seconds`` falls in (what a percentile answers)."""
        return _BOUNDS[min(bisect.bisect_left(_BOUNDS, seconds), len(_BOUNDS) - 1)]

    def _decay(self) -> None:
        epoch = int(self._now() // self.half_life)
        if epoch <= self._epoch:
            return
        factor = 0.5 ** (epoch - self._epoch)
        self._epoch = epoch
        self._counts = [count * factor for count in self._counts]
        self.total *= factor


class LatencyTracker:
    """One :class:`DecayingHistogram` per ``service.method``, made on first use."""

    def __init__(self, clock: Clock, *, half_life: float = 10.0, min_samples: float = 20) -> None:
        self._clock = clock
        self._half_life = half_life
        self._min_samples = min_samples
        self._methods: dict[str, DecayingHistogram] = {}

    def __getitem__(self, target: str) -> DecayingHistogram:
        histogram = self._methods.get(target)
        if histogram is None:
            histogram = self._methods[target] = DecayingHistogram(
                self._clock, half_life=self._half_life, min_samples=self._min_samples
            )
        return histogram

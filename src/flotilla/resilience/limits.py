"""Adaptive concurrency limits: how many calls a method may run at once, learnt from latency.

A fixed limit is a guess that goes stale as a replica's hardware, its
dependencies and its callers change.  An adaptive limit treats the method like
a TCP connection treats the network (the idea of Netflix's concurrency-limits
library): while latency stays near what the method takes unloaded, calls are
not queueing anywhere and the limit may grow; when latency climbs, calls are
waiting on something (CPU, a pool, a dependency) and the limit comes down
before the wait turns into timeouts.

Each limit is a pure object, told of every completed call
(:meth:`ConcurrencyLimit.sample`, with its round-trip time and the calls that
were running when it started) or of a call that timed out
(:meth:`ConcurrencyLimit.drop`); it answers the new limit, always within
``[1, cap]``.  Two algorithms:

* :class:`VegasLimit` (TCP Vegas): estimate the queue the limit builds as
  ``limit * (1 - rtt_noload / rtt)`` and keep it between ``alpha`` and ``beta``
  calls.
* :class:`Gradient2Limit`: compare a short average of the latency (the latest
  sample) with a long one; their ratio scales the limit, so a sustained rise
  cuts it, a steady latency lets it grow by a small queue allowance.

Neither lets a lightly used method grow its limit: with fewer than half the
limit's calls running, a sample says nothing about what more would cost.
"""

from __future__ import annotations

import math
import random as random_module
from typing import Literal, Protocol

__all__ = ["ConcurrencyLimit", "Gradient2Limit", "VegasLimit", "adaptive_limit"]

INITIAL_LIMIT = 20
"""Where an adaptive limit starts (capped at ``max_concurrent``): enough for a
method to get going, small enough to learn before a burst piles up."""


class ConcurrencyLimit(Protocol):
    """An adaptive limit: told of each completed call, it answers the limit now."""

    @property
    def limit(self) -> int:
        """Calls that may run at once now (within ``[1, cap]``)."""
        ...

    def sample(self, rtt: float, inflight: int) -> int:
        """A call completed in ``rtt`` seconds with ``inflight`` calls running when it began."""
        ...

    def drop(self) -> int:
        """A call ran out of time: back off."""
        ...


def _log10(value: float) -> int:
    # Whole decades, at least 1: Vegas's thresholds scale with the limit's
    # order of magnitude, and stay usable for limits below 10.
    return max(1, int(math.log10(max(value, 1.0))))


class VegasLimit:
    """TCP Vegas's delay-based limit.

    ``rtt_noload`` is the lowest round-trip time seen; the queue the current
    limit builds is estimated as ``limit * (1 - rtt_noload / rtt)``.  With
    ``d = log10(limit)`` (whole decades, at least 1)::

        queue <= d            limit += 6 d   (no queue at all: grow fast)
        d < queue < 3 d       limit += d     (a little queue: grow slowly)
        3 d <= queue <= 6 d   unchanged
        queue > 6 d           limit -= d     (queueing: shrink)
        a drop                limit -= d

    Every ``probe_every * limit`` samples (times a random factor in
    ``[0.5, 1)``, so replicas do not probe in step) the next sample becomes
    ``rtt_noload``: a method whose unloaded time rose for good (a bigger
    table, a slower dependency) would otherwise look queued forever.
    """

    def __init__(
        self,
        cap: int,
        *,
        initial: int = INITIAL_LIMIT,
        probe_every: int = 30,
        random: random_module.Random | None = None,
    ) -> None:
        self.cap = cap
        self.estimate = float(max(1, min(initial, cap)))
        self.rtt_noload = 0.0
        self.probe_every = probe_every
        self._random = random or random_module.Random()
        self._samples = 0
        self._probe_at = self._next_probe()

    @property
    def limit(self) -> int:
        return int(self.estimate)

    def _next_probe(self) -> float:
        return self.probe_every * self.estimate * (0.5 + self._random.random() / 2)

    def sample(self, rtt: float, inflight: int) -> int:
        if rtt <= 0:
            return self.limit  # a clock too coarse (or a fake one) to time the call
        self._samples += 1
        if self._samples >= self._probe_at:
            self._samples = 0
            self._probe_at = self._next_probe()
            self.rtt_noload = rtt
            return self.limit
        if self.rtt_noload == 0.0 or rtt < self.rtt_noload:
            self.rtt_noload = rtt
            return self.limit
        if inflight * 2 < self.estimate:
            return self.limit  # too few calls to tell what more would cost
        decade = _log10(self.estimate)
        queue = self.estimate * (1 - self.rtt_noload / rtt)
        if queue <= decade:
            return self._set(self.estimate + 6 * decade)
        if queue < 3 * decade:
            return self._set(self.estimate + decade)
        if queue > 6 * decade:
            return self._set(self.estimate - decade)
        return self.limit

    def drop(self) -> int:
        return self._set(self.estimate - _log10(self.estimate))

    def _set(self, estimate: float) -> int:
        self.estimate = float(max(1, min(self.cap, estimate)))
        return self.limit


class Gradient2Limit:
    """Netflix's Gradient2: the limit follows the ratio of a long to a short latency average.

    The long average ``long_rtt`` is the plain mean of the first ``warmup``
    samples, then an exponential average over about ``long_window`` samples;
    the short one is the latest sample.  Per sample::

        gradient = clamp(tolerance * long_rtt / rtt, 0.5, 1)
        target   = limit * gradient + queue
        limit    = limit * (1 - smoothing) + target * smoothing

    So a steady latency (gradient 1) grows the limit by ``queue * smoothing``
    per call, and a latency above ``tolerance`` times the long average shrinks
    it, at most halving the target per call.  When the long average has
    climbed above twice the latest sample (a burst that is over), it is pulled
    down by 5 % so that it does not mask the next rise.
    """

    def __init__(
        self,
        cap: int,
        *,
        initial: int = INITIAL_LIMIT,
        queue: float = 4.0,
        smoothing: float = 0.2,
        tolerance: float = 1.5,
        long_window: int = 600,
        warmup: int = 10,
    ) -> None:
        self.cap = cap
        self.estimate = float(max(1, min(initial, cap)))
        self.queue = queue
        self.smoothing = smoothing
        self.tolerance = tolerance
        self.long_rtt = 0.0
        self._decay = 2.0 / (long_window + 1)
        self._warmup = warmup
        self._samples = 0

    @property
    def limit(self) -> int:
        return int(self.estimate)

    def sample(self, rtt: float, inflight: int) -> int:
        if rtt <= 0:
            return self.limit  # a clock too coarse (or a fake one) to time the call
        self._average(rtt)
        if self.long_rtt / rtt > 2:
            self.long_rtt *= 0.95
        if inflight * 2 < self.estimate:
            return self.limit  # too few calls to tell what more would cost
        gradient = max(0.5, min(1.0, self.tolerance * self.long_rtt / rtt))
        target = self.estimate * gradient + self.queue
        return self._set(self.estimate * (1 - self.smoothing) + target * self.smoothing)

    def drop(self) -> int:
        # A timeout is the clearest sign of queueing: count it as a sample at
        # the gradient's floor (0.5), with no queue allowance.
        return self._set(self.estimate * (1 - self.smoothing / 2))

    def _average(self, rtt: float) -> None:
        self._samples += 1
        if self._samples <= self._warmup:
            self.long_rtt += (rtt - self.long_rtt) / self._samples
        else:
            self.long_rtt += (rtt - self.long_rtt) * self._decay

    def _set(self, estimate: float) -> int:
        self.estimate = max(1.0, min(float(self.cap), estimate))
        return self.limit


def adaptive_limit(
    kind: Literal["vegas", "gradient2"], cap: int, random: random_module.Random | None = None
) -> ConcurrencyLimit:
    """The adaptive limit ``kind`` names, within ``[1, cap]``."""
    if kind == "vegas":
        return VegasLimit(cap, random=random)
    return Gradient2Limit(cap)

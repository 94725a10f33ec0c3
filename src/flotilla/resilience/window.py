"""A time-based sliding window of call outcomes: calls, failures and slow calls.

The window spans ``seconds`` cut into ``buckets`` equal buckets; bucket ``k``
holds the calls recorded at times ``t`` with ``floor(t / width) == k``.  The
totals are those of the current bucket and the ``buckets - 1`` before it, so a
call leaves the window between ``seconds - width`` and ``seconds`` after it
was recorded (a fixed number of counters however busy the caller is, which a
log of every call would not be).

Recording and reading cost O(1): running totals are kept, and buckets that
fell out of the window are cleared when time is next seen to move (at most
``buckets`` of them, however long the window was idle).  Time is passed in,
so the window is pure and a test drives it with exact numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["Counts", "SlidingWindow"]

DEFAULT_BUCKETS = 10


class Counts(NamedTuple):
    """What a window holds: calls in all, and of them how many failed and how many were slow."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float:
        """Failures over calls (0.0 with no calls)."""
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_rate(self) -> float:
        """Slow calls over calls (0.0 with no calls)."""
        return self.slow / self.calls if self.calls else 0.0


class SlidingWindow:
    """Counts of the calls of the last ``seconds`` (see the module docstring)."""

    def __init__(self, seconds: float, buckets: int = DEFAULT_BUCKETS) -> None:
        if seconds <= 0 or buckets < 1:
            raise ValueError(
                f"a window needs positive seconds and buckets, not {seconds}, {buckets}"
            )
        self.seconds = seconds
        self.width = seconds / buckets
        self._size = buckets
        # Per bucket slot: [calls, failures, slow]; ``_epoch`` is the bucket index
        # the newest slot holds, slots before it (modulo size) hold older buckets.
        self._slots = [[0, 0, 0] for _ in range(buckets)]
        self._totals = [0, 0, 0]
        self._epoch: int | None = None

    def record(self, now: float, *, failed: bool, slow: bool) -> Sequence[int]:
        """Count one call that ended at ``now``; returns the totals then (calls, failures, slow).

        The totals are the window's own, read-only, and valid until the next call
        (the breaker reads them on every call: no copy, no second look at the clock).
        """
        slot = self._slots[self._advance(now) % self._size]
        totals = self._totals
        slot[0] += 1
        totals[0] += 1
        if failed:
            slot[1] += 1
            totals[1] += 1
        if slow:
            slot[2] += 1
            totals[2] += 1
        return totals

    def counts(self, now: float) -> Counts:
        """The calls still in the window at ``now``."""
        self._advance(now)
        calls, failures, slow = self._totals
        return Counts(calls, failures, slow)

    def reset(self) -> None:
        """Forget every call (a breaker that closed starts afresh)."""
        for slot in self._slots:
            slot[:] = (0, 0, 0)
        self._totals = [0, 0, 0]
        self._epoch = None

    def _advance(self, now: float) -> int:
        epoch = math.floor(now / self.width)
        if self._epoch is None:
            self._epoch = epoch
        elif epoch > self._epoch:
            # Clear the slots of the buckets that left (all of them after a long pause).
            for index in range(self._epoch + 1, min(epoch, self._epoch + self._size) + 1):
                self._clear(self._slots[index % self._size])
            self._epoch = epoch
        # A time before the newest bucket (a clock read late) counts in the newest.
        return self._epoch

    def _clear(self, slot: list[int]) -> None:
        for position in range(3):
            self._totals[position] -= slot[position]
        slot[:] = (0, 0, 0)

"""Time, as a dependency: the runtime reads the wall clock through a ``Clock``.

The slow, time-driven parts (lease expiry, heartbeats, watch polling) ask a
``Clock`` instead of calling :mod:`time` directly, so a test can swap in
:class:`flotilla.testing.FakeClock` and drive time by hand.  The per-call path
(deadlines, latency averages) reads ``time.monotonic()`` itself: it runs on
every call, and what it measures is real time spent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Where a component reads the time and waits for it to pass."""

    def time(self) -> float:
        """Seconds since the epoch (comparable across processes on one machine)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals within a process)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait until ``seconds`` have passed on this clock."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

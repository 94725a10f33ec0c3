"""Deadline sweeps: one timer per connection, not one per call.

Arming and cancelling a timer for every call cost more than the rest of the
call path (see BENCHMARKS.md).  Instead, while a connection has calls in
flight, it is swept every :data:`SWEEP_INTERVAL`: the calls whose deadline
passed are expired in one go.  A deadline is thus kept to within that interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["SWEEP_INTERVAL", "Sweeper"]

SWEEP_INTERVAL = 0.005


class Sweeper:
    """Calls ``expire(now)`` every :data:`SWEEP_INTERVAL` from :meth:`arm` on, while ``busy()``."""

    __slots__ = ("_busy", "_expire", "_handle", "_loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        expire: Callable[[float], None],
        busy: Callable[[], bool],
    ) -> None:
        self._loop = loop
        self._expire = expire
        self._busy = busy
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """Make sure a sweep is coming (cheap when one already is)."""
        if self._handle is None:
            self._handle = self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _sweep(self) -> None:
        self._handle = None
        self._expire(time.monotonic())
        if self._busy():
            self.arm()

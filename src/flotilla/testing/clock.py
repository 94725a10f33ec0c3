"""A clock that moves only when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["FakeClock"]


class FakeClock:
    """A :class:`~flotilla.clock.Clock` driven by :meth:`advance`.

    ``sleep()`` returns only once the test has advanced the clock past the
    sleeper's wake-up time.  ``advance`` moves time forward in steps, stopping
    at each wake-up time and letting the woken tasks run before going on, so
    a lease renewed every 0.4 s survives ``await clock.advance(10)`` exactly as
    it would survive ten real seconds.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper due on the way, in order."""
        # Tasks started just before (a part's loop) first reach their sleep:
        # time must not move past a sleeper that was about to register.
        await _settle()
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            wake_at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake_at)
            if not future.done():
                future.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    # Let woken tasks run until they block again (a few loop iterations suffice
    # for the chains of awaits the runtime's timers go through).
    for _ in range(rounds):
        await asyncio.sleep(0)

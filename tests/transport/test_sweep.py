from __future__ import annotations

import asyncio

from flotilla.testing import wait_for
from flotilla.transport import sweep
from flotilla.transport.sweep import Sweeper


async def test_sweeps_while_busy_then_stops() -> None:
    seen: list[float] = []
    busy = [True]

    def expire(now: float) -> None:
        seen.append(now)
        if len(seen) == 3:
            busy[0] = False

    sweeper = Sweeper(asyncio.get_running_loop(), expire, lambda: busy[0])
    sweeper.arm()
    sweeper.arm()  # already armed: still one timer
    await wait_for(lambda: len(seen) == 3)
    await asyncio.sleep(sweep.SWEEP_INTERVAL * 4)  # no longer busy: no fourth sweep
    assert len(seen) == 3
    assert seen == sorted(seen)


async def test_cancel_stops_the_coming_sweep() -> None:
    seen: list[float] = []
    sweeper = Sweeper(asyncio.get_running_loop(), seen.append, lambda: True)
    sweeper.arm()
    sweeper.cancel()
    await asyncio.sleep(sweep.SWEEP_INTERVAL * 4)
    assert seen == []
    sweeper.arm()  # usable again after a cancel
    await wait_for(lambda: bool(seen))
    sweeper.cancel()

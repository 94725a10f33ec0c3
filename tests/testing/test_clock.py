from __future__ import annotations

import asyncio

from flotilla.testing import FakeClock


async def test_sleep_returns_only_when_time_is_advanced_past_it() -> None:
    clock = FakeClock()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(5)
        woke.append(clock.time())

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)  # let it start sleeping
    await clock.advance(4.9)
    assert woke == []
    await clock.advance(0.1)
    assert woke == [clock.time()]
    await task


async def test_advance_stops_at_each_wakeup_in_order() -> None:
    clock = FakeClock(start=0.0)
    seen: list[tuple[str, float]] = []

    async def ticker(name: str, period: float, times: int) -> None:
        for _ in range(times):
            await clock.sleep(period)
            seen.append((name, clock.time()))

    tasks = [
        asyncio.create_task(ticker("fast", 0.5, 4)),
        asyncio.create_task(ticker("slow", 0.75, 2)),
    ]
    await asyncio.sleep(0)
    await clock.advance(2.0)
    # At 1.5 both are due: the one that went to sleep first wakes first.
    assert seen == [
        ("fast", 0.5),
        ("slow", 0.75),
        ("fast", 1.0),
        ("slow", 1.5),
        ("fast", 1.5),
        ("fast", 2.0),
    ]
    assert clock.time() == 2.0
    await asyncio.gather(*tasks)


async def test_time_and_monotonic_agree() -> None:
    clock = FakeClock(start=10.0)
    await clock.advance(2.5)
    assert clock.time() == clock.monotonic() == 12.5

"""MemoryRegistry on a fake clock: leases end exactly when the clock says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from flotilla.errors import NotFound
from flotilla.registry import Health, Instance, MemoryRegistry

START = 1_000.0
WAIT = 2.0  # real seconds before a test fails instead of hanging


class FakeClock:
    """A clock that only moves when the test calls :meth:`advance`."""

    def __init__(self, now: float = START) -> None:
        self._now = now
        self._order = itertools.count()  # ties broken by arrival, never by comparing futures
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        self._wake()  # a sleep of zero or less ends at once
        await future  # a cancelled sleeper is skipped by _wake

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._wake()

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (cancelled ones not counted)."""
        return sum(not future.done() for _, _, future in self._sleepers)

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


def inst(id: str, **kw: Any) -> Instance:
    return Instance(id=id, service="svc", address="127.0.0.1:9000", **kw)


async def settle() -> None:
    """Let every task that can run, run (the fake clock stands still meanwhile)."""
    await asyncio.sleep(0.01)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def registry(clock: FakeClock) -> AsyncIterator[MemoryRegistry]:
    reg = MemoryRegistry(clock)
    yield reg
    await reg.aclose()


def watch(registry: MemoryRegistry) -> aclosing[AsyncGenerator[list[Instance], None]]:
    return aclosing(registry.watch("svc"))


async def test_lease_ends_exactly_at_expiry(registry: MemoryRegistry, clock: FakeClock) -> None:
    await registry.register(inst("a"), ttl=10)
    clock.advance(9.999)
    assert await registry.list() == [inst("a")]
    clock.advance(0.001)  # now == registered + ttl: the lease has run out
    assert clock.time() == START + 10
    assert await registry.list() == []
    with pytest.raises(NotFound, match="'a'"):
        await registry.heartbeat("a")


async def test_heartbeat_renews_from_now(registry: MemoryRegistry, clock: FakeClock) -> None:
    await registry.register(inst("a"), ttl=10)
    clock.advance(6)
    await registry.heartbeat("a")  # now expires at START + 16
    clock.advance(9.5)
    assert await registry.list() == [inst("a")]
    clock.advance(0.5)
    assert await registry.list() == []


async def test_expiry_wakes_watch_with_nobody_calling(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    await registry.register(inst("a"), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        assert clock.sleepers == 1  # the watcher sleeps on the clock: no busy loop
        clock.advance(9.9)
        await settle()
        assert not pending.done()
        clock.advance(0.1)
        async with asyncio.timeout(WAIT):
            assert await pending == []


async def test_renewal_moves_the_watch_wakeup(registry: MemoryRegistry, clock: FakeClock) -> None:
    await registry.register(inst("a"), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        clock.advance(5)
        await registry.heartbeat("a")  # expires at START + 15 now
        clock.advance(5)  # the old expiry: the watcher wakes, finds no change
        await settle()
        assert not pending.done()
        assert clock.sleepers == 1  # and sleeps again, until the new expiry
        clock.advance(5)
        async with asyncio.timeout(WAIT):
            assert await pending == []


async def test_watch_wakes_for_the_earliest_expiry(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    await registry.register(inst("long"), ttl=30)
    async with watch(registry) as it:
        assert await anext(it) == [inst("long")]
        await registry.register(inst("short"), ttl=5)
        assert await anext(it) == [inst("long"), inst("short")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        clock.advance(5)
        async with asyncio.timeout(WAIT):
            assert await pending == [inst("long")]


async def test_health_change_wakes_watch_but_same_health_does_not(
    registry: MemoryRegistry,
) -> None:
    await registry.register(inst("a", health=Health.HEALTHY), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a", health=Health.HEALTHY)]
        pending = asyncio.ensure_future(anext(it))
        await registry.heartbeat("a", health=Health.HEALTHY)
        await settle()
        assert not pending.done()
        await registry.heartbeat("a", health=Health.UNHEALTHY)
        async with asyncio.timeout(WAIT):
            assert await pending == [inst("a", health=Health.UNHEALTHY)]


async def test_snapshots_are_copies(registry: MemoryRegistry) -> None:
    await registry.register(inst("a"), ttl=10)
    async with watch(registry) as it:
        first = await anext(it)
        first.clear()  # the consumer's to mutate; the watcher compares with its own copy
        await registry.register(inst("b"), ttl=10)
        assert await anext(it) == [inst("a"), inst("b")]


async def test_aclose_cancels_the_watchers_clock_sleep(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    await registry.register(inst("a"), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        assert clock.sleepers == 1
        await registry.aclose()
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(WAIT):
                await pending
    assert clock.sleepers == 0  # cancelled and reaped, not left waiting for time to pass

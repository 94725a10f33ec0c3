"""MemoryRegistry on a fake clock: leases end exactly when the clock says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from flotilla.errors import NotFound
from flotilla.registry import Health, Instance, MemoryRegistry
from flotilla.testing import FakeClock

START = 1_000.0
WAIT = 2.0  # real seconds before a test fails instead of hanging


class CountingClock(FakeClock):
    """A fake clock that knows how many sleeps are pending right now."""

    def __init__(self) -> None:
        super().__init__(start=START)
        self.sleeping = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeping += 1
        try:
            await super().sleep(seconds)
        finally:
            self.sleeping -= 1  # woken or cancelled


def inst(id: str, **kw: Any) -> Instance:
    return Instance(id=id, service="svc", address="127.0.0.1:9000", **kw)


async def settle() -> None:
    """Let every task that can run, run (the fake clock stands still meanwhile)."""
    await asyncio.sleep(0.01)


@pytest.fixture
def clock() -> CountingClock:
    return CountingClock()


@pytest.fixture
async def registry(clock: CountingClock) -> AsyncIterator[MemoryRegistry]:
    reg = MemoryRegistry(clock)
    yield reg
    await reg.aclose()


async def registered(registry: MemoryRegistry, *instances: Instance, ttl: float) -> str:
    lease = await registry.grant(ttl)
    for instance in instances:
        await registry.register(instance, lease=lease)
    return lease


def watch(registry: MemoryRegistry) -> aclosing[AsyncGenerator[list[Instance], None]]:
    return aclosing(registry.watch("svc"))


async def test_lease_ends_exactly_at_expiry(registry: MemoryRegistry, clock: FakeClock) -> None:
    lease = await registered(registry, inst("a"), inst("b"), ttl=10)
    await clock.advance(9.999)
    assert await registry.list() == [inst("a"), inst("b")]
    await clock.advance(0.001)  # now == granted + ttl: the lease has run out
    assert clock.time() == START + 10
    assert await registry.list() == []
    with pytest.raises(NotFound, match=repr(lease)):
        await registry.keepalive(lease)


async def test_keepalive_renews_from_now(registry: MemoryRegistry, clock: FakeClock) -> None:
    lease = await registered(registry, inst("a"), ttl=10)
    await clock.advance(6)
    await registry.keepalive(lease)  # now expires at START + 16
    await clock.advance(9.5)
    assert await registry.list() == [inst("a")]
    await clock.advance(0.5)
    assert await registry.list() == []


async def test_grant_forgets_dead_leases_and_their_instances(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    dead = await registered(registry, inst("a"), ttl=5)
    await clock.advance(5)
    await registered(registry, inst("b"), ttl=5)
    assert dead not in registry._leases
    assert list(registry._entries) == ["b"]


async def test_expiry_wakes_watch_with_nobody_calling(
    registry: MemoryRegistry, clock: CountingClock
) -> None:
    await registered(registry, inst("a"), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        assert clock.sleeping == 1  # the watcher sleeps on the clock: no busy loop
        await clock.advance(9.9)
        assert not pending.done()
        await clock.advance(0.1)
        async with asyncio.timeout(WAIT):
            assert await pending == []


async def test_renewal_moves_the_watch_wakeup(
    registry: MemoryRegistry, clock: CountingClock
) -> None:
    lease = await registered(registry, inst("a"), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        await clock.advance(5)
        await registry.keepalive(lease)  # expires at START + 15 now
        await clock.advance(5)  # the old expiry: the watcher wakes, finds no change
        assert not pending.done()
        assert clock.sleeping == 1  # and sleeps again, until the new expiry
        await clock.advance(5)
        async with asyncio.timeout(WAIT):
            assert await pending == []


async def test_watch_wakes_for_the_earliest_expiry(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    await registered(registry, inst("long"), ttl=30)
    async with watch(registry) as it:
        assert await anext(it) == [inst("long")]
        await registered(registry, inst("short"), ttl=5)
        assert await anext(it) == [inst("long"), inst("short")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        await clock.advance(5)
        async with asyncio.timeout(WAIT):
            assert await pending == [inst("long")]


async def test_health_change_wakes_watch_but_same_health_does_not(
    registry: MemoryRegistry,
) -> None:
    await registered(registry, inst("a", health=Health.HEALTHY), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a", health=Health.HEALTHY)]
        pending = asyncio.ensure_future(anext(it))
        await registry.set_health("a", Health.HEALTHY)
        await settle()
        assert not pending.done()
        await registry.set_health("a", Health.UNHEALTHY)
        async with asyncio.timeout(WAIT):
            assert await pending == [inst("a", health=Health.UNHEALTHY)]


async def test_revoke_of_a_lease_with_no_instances_wakes_nobody(
    registry: MemoryRegistry,
) -> None:
    empty = await registry.grant(10)
    await registered(registry, inst("a"), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a")]
        pending = asyncio.ensure_future(anext(it))
        await registry.revoke(empty)
        await settle()
        assert not pending.done()
        await registry.deregister("a")
        async with asyncio.timeout(WAIT):
            assert await pending == []


async def test_snapshots_are_copies(registry: MemoryRegistry) -> None:
    lease = await registered(registry, inst("a"), ttl=10)
    async with watch(registry) as it:
        first = await anext(it)
        first.clear()  # the consumer's to mutate; the watcher compares with its own copy
        await registry.register(inst("b"), lease=lease)
        assert await anext(it) == [inst("a"), inst("b")]


async def test_aclose_cancels_the_watchers_clock_sleep(
    registry: MemoryRegistry, clock: CountingClock
) -> None:
    await registered(registry, inst("a"), ttl=10)
    async with watch(registry) as it:
        assert await anext(it) == [inst("a")]
        pending = asyncio.ensure_future(anext(it))
        await settle()
        assert clock.sleeping == 1
        await registry.aclose()
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(WAIT):
                await pending
    assert clock.sleeping == 0  # cancelled and reaped, not left waiting for time to pass

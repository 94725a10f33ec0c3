"""LeaseKeeper on a fake clock and the memory registry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from flotilla.errors import ConfigError, Unavailable
from flotilla.registry import Health, Instance, MemoryRegistry
from flotilla.runtime.lease import LeaseKeeper
from flotilla.testing import FakeClock

TTL = 1.5
INTERVAL = 0.4


def inst(id: str, **kw: Any) -> Instance:
    return Instance(id=id, service="svc", address="127.0.0.1:9000", health=Health.HEALTHY, **kw)


INSTANCES = [inst("a"), inst("b")]


class FlakyRegistry(MemoryRegistry):
    """Fails keepalive with ``failure`` while it is set."""

    failure: Exception | None = None

    async def keepalive(self, lease: str) -> None:
        if self.failure is not None:
            raise self.failure
        await super().keepalive(lease)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def registry(clock: FakeClock) -> AsyncIterator[FlakyRegistry]:
    registry = FlakyRegistry(clock)
    yield registry
    await registry.aclose()


def keeper(
    registry: MemoryRegistry, clock: FakeClock, healths: list[Health] | None = None
) -> LeaseKeeper:
    async def health() -> Sequence[Health]:
        assert healths is not None
        return list(healths)

    return LeaseKeeper(
        registry,
        lambda: INSTANCES,
        ttl=TTL,
        interval=INTERVAL,
        health=None if healths is None else health,
        clock=clock,
    )


async def ids(registry: MemoryRegistry) -> list[str]:
    return [instance.id for instance in await registry.list()]


async def start(keeper: LeaseKeeper) -> None:
    """Start ``keeper`` and let its loop reach its first clock sleep, as the fake clock needs."""
    await keeper.start()
    await asyncio.sleep(0)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_keepalive_keeps_every_instance_alive(
    registry: MemoryRegistry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    lease = keeper(registry, clock)
    await start(lease)
    first = lease.lease
    await clock.advance(10)  # many ttls
    assert await registry.list() == INSTANCES
    assert lease.lease == first  # one lease all along
    assert warnings(caplog) == []
    await lease.stop()


async def test_stop_revokes_at_once_abandon_leaves_the_lease_to_expire(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    stopped, abandoned = keeper(registry, clock), keeper(registry, clock)
    await start(stopped)
    await stopped.stop()
    assert await registry.list() == []
    await stopped.stop()  # idempotent

    await start(abandoned)
    await abandoned.abandon()
    assert await ids(registry) == ["a", "b"]  # still there, as after a crash
    await clock.advance(TTL)
    assert await registry.list() == []  # no keepalive any more: gone after one ttl


async def test_a_revoked_lease_is_granted_again_and_every_instance_registered(
    registry: MemoryRegistry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    lease = keeper(registry, clock)
    await start(lease)
    old = lease.lease
    assert old is not None
    await registry.revoke(old)  # behind the keeper's back: a registry replaced, say
    assert await registry.list() == []
    await clock.advance(INTERVAL)
    assert await registry.list() == INSTANCES
    assert lease.lease not in (None, old)
    (warning,) = warnings(caplog)  # one line, naming the instances
    assert "was lost" in warning
    assert "a, b" in warning
    await lease.stop()


async def test_an_expired_lease_heals_and_other_failures_warn_once(
    registry: FlakyRegistry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    lease = keeper(registry, clock)
    await start(lease)
    registry.failure = Unavailable("registry file is busy")
    await clock.advance(TTL)  # beats fail until the lease runs out
    assert await registry.list() == []
    failed = [w for w in warnings(caplog) if "registry file is busy" in w]
    assert len(failed) == 1  # not one per beat
    registry.failure = None
    await clock.advance(INTERVAL)  # keepalive: NotFound -> a new lease
    assert await registry.list() == INSTANCES
    assert any("works again" in w for w in warnings(caplog))
    assert sum("was lost" in w for w in warnings(caplog)) == 1
    await lease.stop()


async def test_health_changes_are_published_and_kept_when_registering_again(
    registry: MemoryRegistry, clock: FakeClock
) -> None:
    healths = [Health.HEALTHY, Health.HEALTHY]
    lease = keeper(registry, clock, healths)
    await start(lease)
    healths[1] = Health.UNHEALTHY
    await clock.advance(INTERVAL)
    assert [i.health for i in await registry.list()] == [Health.HEALTHY, Health.UNHEALTHY]
    assert lease.lease is not None
    await registry.revoke(lease.lease)
    await clock.advance(INTERVAL)
    # Registered again with the health just checked, not the one it started with.
    assert [i.health for i in await registry.list()] == [Health.HEALTHY, Health.UNHEALTHY]
    await lease.stop()


async def test_a_health_check_that_raises_reports_unhealthy_and_keeps_the_lease(
    registry: MemoryRegistry, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> Sequence[Health]:
        raise RuntimeError("check exploded")

    lease = LeaseKeeper(
        registry, lambda: INSTANCES, ttl=TTL, interval=INTERVAL, health=broken, clock=clock
    )
    await start(lease)
    await clock.advance(5)
    assert [i.health for i in await registry.list()] == [Health.UNHEALTHY] * 2
    assert any("check exploded" in w for w in warnings(caplog))
    await lease.stop()


async def test_a_failed_start_leaves_nothing_registered(clock: FakeClock) -> None:
    class Refusing(MemoryRegistry):
        async def register(self, instance: Instance, *, lease: str) -> None:
            if instance.id == "b":
                raise Unavailable("no room for b")
            await super().register(instance, lease=lease)

    registry = Refusing(clock)
    lease = keeper(registry, clock)
    with pytest.raises(Unavailable, match="no room"):
        await lease.start()
    assert await registry.list() == []  # "a" went with the revoked lease
    await lease.stop()  # nothing to revoke, nothing raised
    await registry.aclose()


async def test_stop_logs_a_failed_revoke_instead_of_raising(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class NoRevoke(MemoryRegistry):
        async def revoke(self, lease: str) -> None:
            raise Unavailable("registry gone")

    registry = NoRevoke(clock)
    lease = keeper(registry, clock)
    await start(lease)
    await lease.stop()
    assert any("registry gone" in w and "expire" in w for w in warnings(caplog))
    await registry.aclose()


@pytest.mark.parametrize("interval", [0, -1, TTL, TTL + 1])
def test_the_interval_must_be_shorter_than_the_ttl(interval: float, clock: FakeClock) -> None:
    with pytest.raises(ConfigError, match="shorter than the lease ttl"):
        LeaseKeeper(
            MemoryRegistry(clock),
            lambda: INSTANCES,
            ttl=TTL,
            interval=interval,
            health=None,
            clock=clock,
        )

"""The health part: each check on its own interval under the fake clock; health from results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from flotilla import Health, NodeConfig, Service, Timings, rpc
from flotilla.health import health_check
from flotilla.registry import MemoryRegistry
from flotilla.runtime.health import HealthMonitor
from flotilla.testing import Cluster, FakeClock, wait_for


class Store(Service, name="store"):
    """``database`` passes while ``reachable``; ``runs`` counts its runs."""

    def __init__(self) -> None:
        self.reachable = True
        self.runs = 0
        self.default_runs = 0

    async def health(self) -> bool:
        self.default_runs += 1
        return True

    @health_check(interval=5, timeout=1)
    async def database(self) -> bool:
        self.runs += 1
        if self.reachable is None:
            raise OSError("connection refused")
        return self.reachable


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def monitor(clock: FakeClock) -> AsyncIterator[tuple[HealthMonitor, Store]]:
    store = Store()
    health = HealthMonitor([store], interval=0.5, timeout=0.25, clock=clock)
    yield health, store
    await health.stop()


async def test_start_runs_every_check_once_so_the_health_is_known(
    monitor: tuple[HealthMonitor, Store],
) -> None:
    health, store = monitor
    assert health.health("store") is Health.UNKNOWN  # nothing run yet
    await health.start()
    assert (store.runs, store.default_runs) == (1, 1)
    assert health.health("store") is Health.HEALTHY
    assert health.check_names() == [("store", "health"), ("store", "database")]


async def test_each_check_runs_on_its_own_interval(
    monitor: tuple[HealthMonitor, Store], clock: FakeClock
) -> None:
    health, store = monitor
    await health.start()
    await clock.advance(4.9)
    assert store.runs == 1  # its interval is 5 s
    assert store.default_runs == 1 + 9  # the default check every 0.5 s: 9 more by 4.9 s
    await clock.advance(0.1)
    assert store.runs == 2
    await clock.advance(10)
    assert store.runs == 4


async def test_a_failing_check_makes_the_service_unhealthy_until_it_passes(
    monitor: tuple[HealthMonitor, Store], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    health, store = monitor
    await health.start()
    store.reachable = False
    await clock.advance(5)
    assert health.health("store") is Health.UNHEALTHY
    failed = [r for r in health.results() if r is not None and not r.ok]
    assert [(r.check, r.reason) for r in failed] == [("database", "returned False")]
    await clock.advance(5)  # still failing: logged once, not per run
    store.reachable = True
    await clock.advance(5)
    assert health.health("store") is Health.HEALTHY
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages == [
        "health check store.database failed: returned False",
        "health check store.database passes again",
    ]


async def test_a_check_that_raises_or_returns_no_bool_fails_with_the_reason(
    monitor: tuple[HealthMonitor, Store], clock: FakeClock
) -> None:
    health, store = monitor
    await health.start()
    store.reachable = None
    await clock.advance(5)
    (result,) = [r for r in health.results() if r is not None and r.check == "database"]
    assert result.reason == "raised OSError: connection refused"
    store.reachable = "yes"  # type: ignore[assignment]
    await clock.advance(5)
    (result,) = [r for r in health.results() if r is not None and r.check == "database"]
    assert result.reason == "returned 'yes', not a bool"


class Hanging(Service, name="hanging"):
    @health_check(interval=1, timeout=0.05)
    async def stuck(self) -> bool:
        await asyncio.Event().wait()
        return True


async def test_a_check_that_outlasts_its_timeout_fails() -> None:
    health = HealthMonitor([Hanging()], interval=1, timeout=1, clock=FakeClock())
    await health.start()  # bounded by the timeout, not stuck
    try:
        assert health.health("hanging") is Health.UNHEALTHY
        reasons = [r.reason for r in health.results() if r is not None and not r.ok]
        assert reasons == ["took longer than its timeout (0.05 s)"]
    finally:
        await health.stop()


async def test_stop_ends_every_check_task(
    monitor: tuple[HealthMonitor, Store], clock: FakeClock
) -> None:
    health, store = monitor
    await health.start()
    await health.stop()
    await clock.advance(20)
    assert store.runs == 1
    await health.stop()  # idempotent


class Sick(Service, name="sick"):
    """Two replicas of one service; ``ok`` drives its own check."""

    def __init__(self) -> None:
        self.ok = True

    @rpc
    async def who(self) -> int:
        return id(self)

    @health_check(interval=0.05, timeout=1)
    async def dependency(self) -> bool:
        return self.ok


async def test_a_failing_declared_check_takes_the_endpoint_out_of_balancing() -> None:
    timings = Timings(ttl=0.5, heartbeat=0.05, grace=0, drain=1.0)
    async with Cluster(NodeConfig(timings=timings)) as cluster:
        first, second = await cluster.add(Sick, replicas=2)
        bad, good = first.services[0], second.services[0]
        assert isinstance(bad, Sick)
        await cluster.call("sick.who")
        bad.ok = False
        await wait_for(lambda: _available(cluster) == 1)
        answers = {await cluster.call("sick.who") for _ in range(20)}
        assert answers == {id(good)}
        registry = cluster.registry
        assert isinstance(registry, MemoryRegistry)
        healths = sorted(str(i.health) for i in await registry.list("sick"))
        assert healths == ["healthy", "unhealthy"]
        bad.ok = True
        await wait_for(lambda: _available(cluster) == 2)


def _available(cluster: Cluster) -> int:
    endpoints = cluster.client_node.caller.directory.get("sick")
    return -1 if endpoints is None else len(endpoints.pick_list())

"""The caller's view of a service: only healthy endpoints that no one ejected are offered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from flotilla.calls import endpoints as endpoints_module
from flotilla.calls.endpoints import (
    DOWN_INITIAL,
    DOWN_MAX,
    UNREACHABLE,
    Directory,
    Ejection,
    EndpointSet,
)
from flotilla.errors import DeadlineExceeded, Unavailable
from flotilla.registry import Health, Instance, MemoryRegistry
from flotilla.registry.base import MethodInfo
from flotilla.testing import wait_for


def inst(id: str, port: int = 9000, health: Health = Health.HEALTHY) -> Instance:
    return Instance(id=id, service="svc", address=f"127.0.0.1:{port}", health=health)


class Monotonic:
    """Stands in for ``time`` in the endpoints module; moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Monotonic:
    fake = Monotonic()
    monkeypatch.setattr(endpoints_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def ids(endpoint_set: EndpointSet) -> list[str]:
    return [endpoint.id for endpoint in endpoint_set.pick_list()]


def test_only_healthy_endpoints_are_offered() -> None:
    endpoints = EndpointSet("svc")
    endpoints.update(
        [
            inst("a", 1),
            inst("b", 2, Health.UNHEALTHY),
            inst("c", 3, Health.UNKNOWN),
            inst("d", 4),
        ]
    )
    assert ids(endpoints) == ["a", "d"]
    assert set(endpoints.endpoints) == {"a", "b", "c", "d"}


def test_health_change_is_followed() -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    endpoints.update([inst("a", 1, Health.UNHEALTHY), inst("b", 2)])
    assert ids(endpoints) == ["b"]
    endpoints.update([inst("a", 1), inst("b", 2)])
    assert ids(endpoints) == ["a", "b"]


def test_stats_kept_across_snapshots() -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    a = endpoints.endpoints["a"]
    a.inflight = 3
    a.record(0.5)
    endpoints.update([inst("a", 1, Health.UNHEALTHY), inst("c", 3)])
    assert endpoints.endpoints["a"] is a
    assert a.inflight == 3
    assert a.latency() > 0.4
    assert a.instance.health is Health.UNHEALTHY  # the new instance data is adopted
    assert set(endpoints.endpoints) == {"a", "c"}  # b left with its snapshot
    endpoints.update([inst("a", 1)])
    assert endpoints.endpoints["a"] is a


def test_mark_down_hides_for_a_backoff(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    endpoints.mark_down("127.0.0.1:1")
    assert ids(endpoints) == ["b"]
    clock.now += DOWN_INITIAL - 0.01
    assert ids(endpoints) == ["b"]
    clock.now += 0.01
    assert ids(endpoints) == ["a", "b"]


def test_backoff_doubles_while_failing_up_to_a_cap(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1)])
    expected = DOWN_INITIAL
    seen = []
    for _ in range(8):
        endpoints.mark_down("127.0.0.1:1")
        start = clock.now
        while not ids(endpoints):
            clock.now += 0.125
        seen.append(clock.now - start)
        assert clock.now - start == pytest.approx(expected), seen
        expected = min(expected * 2, DOWN_MAX)
    assert seen[-1] == DOWN_MAX


def test_backoff_starts_over_after_a_good_spell(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1)])
    for _ in range(4):
        endpoints.mark_down("127.0.0.1:1")
    clock.now += 8.0 + DOWN_MAX + 1  # well past the last backoff and then some
    endpoints.mark_down("127.0.0.1:1")
    clock.now += DOWN_INITIAL
    assert ids(endpoints) == ["a"]


def test_mark_down_of_unknown_address_changes_nothing(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1)])
    endpoints.mark_down("10.0.0.1:1")
    assert ids(endpoints) == ["a"]


def test_a_marked_down_address_stays_down_across_snapshots(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    endpoints.mark_down("127.0.0.1:1")
    endpoints.update([inst("a", 1), inst("b", 2), inst("c", 3)])
    assert ids(endpoints) == ["b", "c"]


def test_mark_down_again_within_the_backoff_counts_once(clock: Monotonic) -> None:
    # Calls that shared one failed connect each report it: one failure, one backoff.
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    endpoints.mark_down("127.0.0.1:1")
    clock.now += 0.125
    endpoints.mark_down("127.0.0.1:1")
    endpoints.mark_down("127.0.0.1:1")
    clock.now += DOWN_INITIAL - 0.25
    assert ids(endpoints) == ["b"]
    clock.now += 0.125  # the first backoff (0.5 s) is over, not a doubled one
    assert ids(endpoints) == ["a", "b"]
    # A failure after it is the second in a row: the backoff doubles once.
    endpoints.mark_down("127.0.0.1:1")
    clock.now += 2 * DOWN_INITIAL - 0.125
    assert ids(endpoints) == ["b"]
    clock.now += 0.125
    assert ids(endpoints) == ["a", "b"]


def test_an_address_that_left_the_registry_is_forgotten(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    endpoints.mark_down("127.0.0.1:1")
    assert set(endpoints._down) == {"127.0.0.1:1"}
    endpoints.update([inst("b", 2)])
    assert endpoints._down == {}
    # Back under that address (a replica restarted there): offered at once.
    endpoints.update([inst("a2", 1), inst("b", 2)])
    assert ids(endpoints) == ["a2", "b"]


def test_mark_down_shows_as_an_unreachable_ejection(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    endpoints.mark_down("127.0.0.1:1")
    assert endpoints.ejected == {"a": Ejection(clock.now + DOWN_INITIAL, UNREACHABLE)}


# -- the eject seam -----------------------------------------------------------------------------


def test_eject_leaves_an_endpoint_out_until_its_time(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    a = endpoints.endpoints["a"]
    endpoints.eject(a, until=clock.now + 5.0, reason="breaker open")
    assert ids(endpoints) == ["b"]
    assert endpoints.ejected == {"a": Ejection(clock.now + 5.0, "breaker open")}
    clock.now += 4.99
    assert ids(endpoints) == ["b"]
    clock.now += 0.01
    assert ids(endpoints) == ["a", "b"]  # served its time, with no one calling restore
    assert endpoints.ejected == {}


def test_restore_puts_an_endpoint_back_at_once(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    a = endpoints.endpoints["a"]
    endpoints.eject(a, until=clock.now + 60.0, reason="outlier")
    assert ids(endpoints) == ["b"]
    endpoints.restore(a)
    assert ids(endpoints) == ["a", "b"]
    assert endpoints.ejected == {}
    endpoints.restore(a)  # restoring what is not ejected changes nothing
    assert ids(endpoints) == ["a", "b"]


def test_an_ejection_outlives_snapshots_while_the_endpoint_stays(clock: Monotonic) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    endpoints.eject(endpoints.endpoints["a"], until=clock.now + 60.0, reason="breaker open")
    endpoints.update([inst("a", 1), inst("b", 2), inst("c", 3)])
    assert ids(endpoints) == ["b", "c"]


def test_the_ejection_of_an_endpoint_that_left_the_registry_is_forgotten(
    clock: Monotonic,
) -> None:
    endpoints = EndpointSet("svc")
    endpoints.update([inst("a", 1), inst("b", 2)])
    a = endpoints.endpoints["a"]
    endpoints.eject(a, until=clock.now + 60.0, reason="breaker open")
    endpoints.update([inst("b", 2)])
    assert endpoints.ejected == {}
    # Back under the same id (a lease re-granted after a partition): offered at once.
    endpoints.update([inst("a", 1), inst("b", 2)])
    assert ids(endpoints) == ["a", "b"]
    # And an endpoint that already left cannot be ejected from a stale reference.
    endpoints.update([inst("b", 2)])
    endpoints.eject(a, until=clock.now + 60.0, reason="late verdict")
    assert endpoints.ejected == {}


def test_the_method_table_comes_from_a_healthy_instance() -> None:
    old = (MethodInfo(name="get", timeout=1.0),)
    new = (MethodInfo(name="get", timeout=2.0, idempotent=True), MethodInfo(name="put"))
    endpoints = EndpointSet("svc")
    endpoints.update(
        [
            Instance(id="x", service="svc", address="h:1", health=Health.UNHEALTHY, methods=old),
            Instance(id="y", service="svc", address="h:2", health=Health.HEALTHY, methods=new),
        ]
    )
    assert endpoints.methods == {"get": new[0], "put": new[1]}
    endpoints.update([inst("z", 3)])  # publishes no table
    assert endpoints.methods == {}


# -- Directory ------------------------------------------------------------------------------


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    registry = MemoryRegistry()
    yield registry
    await registry.aclose()


@pytest.fixture
async def directory(registry: MemoryRegistry) -> AsyncIterator[Directory]:
    directory = Directory(registry)
    yield directory
    await directory.aclose()


async def test_open_waits_for_the_first_snapshot(
    registry: MemoryRegistry, directory: Directory
) -> None:
    await registry.register(inst("a", 1), lease=await registry.grant(30))
    assert directory.get("svc") is None
    endpoints = await directory.open("svc")
    assert ids(endpoints) == ["a"]
    assert directory.get("svc") is endpoints
    assert await directory.open("svc") is endpoints


async def test_the_view_follows_the_registry(
    registry: MemoryRegistry, directory: Directory
) -> None:
    endpoints = await directory.open("svc")
    assert ids(endpoints) == []
    await registry.register(inst("a", 1), lease=await registry.grant(30))
    await wait_for(lambda: ids(endpoints) == ["a"])
    await registry.deregister("a")
    await wait_for(lambda: ids(endpoints) == [])


async def test_mark_down_reaches_every_set(registry: MemoryRegistry, directory: Directory) -> None:
    await registry.register(inst("a", 1), lease=await registry.grant(30))
    other = Instance(id="o", service="other", address="127.0.0.1:1", health=Health.HEALTHY)
    await registry.register(other, lease=await registry.grant(30))
    svc = await directory.open("svc")
    other_set = await directory.open("other")
    directory.mark_down("127.0.0.1:1")
    assert svc.pick_list() == ()
    assert other_set.pick_list() == ()


async def test_mark_down_leaves_sets_without_the_address_alone(
    registry: MemoryRegistry, directory: Directory
) -> None:
    await registry.register(inst("a", 1), lease=await registry.grant(30))
    other = Instance(id="o", service="other", address="127.0.0.1:2", health=Health.HEALTHY)
    await registry.register(other, lease=await registry.grant(30))
    svc = await directory.open("svc")
    other_set = await directory.open("other")
    directory.mark_down("127.0.0.1:1")
    assert svc.pick_list() == ()
    assert other_set._down == {}  # nothing remembered for an address it never had
    assert [e.id for e in other_set.pick_list()] == ["o"]


async def test_directory_eject_and_restore_reach_the_services_set(
    registry: MemoryRegistry, directory: Directory
) -> None:
    await registry.register(inst("a", 1), lease=await registry.grant(30))
    await registry.register(inst("b", 2), lease=await registry.grant(30))
    svc = await directory.open("svc")
    a = svc.endpoints["a"]
    until = time.monotonic() + 60.0
    directory.eject(a, until, "breaker open")
    assert ids(svc) == ["b"]
    assert svc.ejected["a"] == Ejection(until, "breaker open")
    directory.restore(a)
    assert ids(svc) == ["a", "b"]
    assert svc.ejected == {}


async def test_directory_eject_of_an_unwatched_service_is_ignored(directory: Directory) -> None:
    stranger = EndpointSet("other")
    stranger.update([Instance(id="o", service="other", address="h:1", health=Health.HEALTHY)])
    directory.eject(stranger.endpoints["o"], time.monotonic() + 60.0, "whatever")
    directory.restore(stranger.endpoints["o"])
    assert directory.get("other") is None


async def test_an_ejection_is_forgotten_when_its_endpoint_deregisters(
    registry: MemoryRegistry, directory: Directory
) -> None:
    await registry.register(inst("a", 1), lease=await registry.grant(30))
    await registry.register(inst("b", 2), lease=await registry.grant(30))
    svc = await directory.open("svc")
    directory.eject(svc.endpoints["a"], time.monotonic() + 60.0, "breaker open")
    await registry.deregister("a")
    await wait_for(lambda: "a" not in svc.endpoints)
    assert svc.ejected == {}


async def test_known_services_lists_what_the_registry_holds(
    registry: MemoryRegistry, directory: Directory
) -> None:
    await registry.register(inst("a", 1), lease=await registry.grant(30))
    other = Instance(id="o", service="other", address="127.0.0.1:2", health=Health.HEALTHY)
    await registry.register(other, lease=await registry.grant(30))
    assert await directory.known_services() == ["other", "svc"]


class SlowRegistry:
    """A registry whose watch yields its first snapshot only when released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def watch(self, service: str | None = None) -> AsyncIterator[list[Instance]]:
        await self.release.wait()
        yield [inst("a", 1)]
        await asyncio.Event().wait()


async def test_get_is_none_until_the_first_snapshot() -> None:
    registry = SlowRegistry()
    directory = Directory(registry)  # type: ignore[arg-type]
    try:
        opening = asyncio.create_task(directory.open("svc"))
        await asyncio.sleep(0.01)
        assert directory.get("svc") is None  # no snapshot yet: nothing to offer
        registry.release.set()
        endpoints = await opening
        assert directory.get("svc") is endpoints
    finally:
        await directory.aclose()


async def test_registry_that_never_answers_gives_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoints_module, "FIRST_SNAPSHOT_TIMEOUT", 0.05)
    directory = Directory(SlowRegistry())  # type: ignore[arg-type]
    try:
        with pytest.raises(Unavailable, match="'svc'"):
            await directory.open("svc")
    finally:
        await directory.aclose()


async def test_the_first_snapshot_wait_ends_at_the_callers_deadline() -> None:
    # FIRST_SNAPSHOT_TIMEOUT is seconds; the caller's budget is shorter, and
    # the caller learns that its deadline passed (as when connecting), not that
    # the registry is down.
    directory = Directory(SlowRegistry())  # type: ignore[arg-type]
    began = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded):
            await directory.open("svc", deadline=began + 0.05)
        assert time.monotonic() - began < 4.0  # the deadline, not the first-snapshot timeout
    finally:
        await directory.aclose()


async def test_a_later_deadline_does_not_extend_the_first_snapshot_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoints_module, "FIRST_SNAPSHOT_TIMEOUT", 0.05)
    directory = Directory(SlowRegistry())  # type: ignore[arg-type]
    began = time.monotonic()
    try:
        with pytest.raises(Unavailable, match="'svc'"):
            await directory.open("svc", deadline=began + 30.0)
        assert time.monotonic() - began < 10.0  # the 0.05 s timeout, far from the deadline
    finally:
        await directory.aclose()


async def test_a_deadline_does_not_cut_a_snapshot_that_arrives_in_time() -> None:
    registry = SlowRegistry()
    directory = Directory(registry)  # type: ignore[arg-type]
    try:
        deadline = time.monotonic() + 5.0
        opening = asyncio.create_task(directory.open("svc", deadline=deadline))
        await asyncio.sleep(0.01)
        registry.release.set()
        assert ids(await opening) == ["a"]
    finally:
        await directory.aclose()


class FlakyRegistry:
    """A watch that fails after each snapshot, a few times."""

    def __init__(self) -> None:
        self.watches = 0

    async def watch(self, service: str | None = None) -> AsyncIterator[list[Any]]:
        self.watches += 1
        yield [inst("a", 1)] if self.watches < 3 else [inst("b", 2)]
        if self.watches < 3:
            raise ConnectionError("registry went away")
        await asyncio.Event().wait()


async def test_a_failed_watch_is_retried_keeping_the_last_view(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = FlakyRegistry()
    directory = Directory(registry)  # type: ignore[arg-type]
    try:
        endpoints = await directory.open("svc")
        assert ids(endpoints) in (["a"], ["b"])
        await wait_for(lambda: ids(endpoints) == ["b"], timeout=3.0)
        assert registry.watches == 3
        assert any("watch of svc failed" in r.getMessage() for r in caplog.records)
    finally:
        await directory.aclose()


async def test_aclose_stops_the_watches(registry: MemoryRegistry) -> None:
    directory = Directory(registry)
    await directory.open("svc")
    assert directory._tasks
    await directory.aclose()
    await directory.aclose()
    assert not directory._tasks


def test_shortfall_and_panic_list_follow_health_and_ejections(clock: Monotonic) -> None:
    endpoint_set = EndpointSet("svc")
    endpoint_set.update(
        [inst("a", 9000), inst("b", 9001, Health.UNHEALTHY), inst("c", 9002), inst("d", 9003)]
    )
    assert endpoint_set.shortfall == 0.25
    assert [e.id for e in endpoint_set.panic_list] == ["a", "b", "c", "d"]
    endpoint_set.eject(endpoint_set.endpoints["c"], clock.now + 5, "breaker open")
    endpoint_set.mark_down("127.0.0.1:9003")
    assert endpoint_set.shortfall == 0.75
    assert [e.id for e in endpoint_set.panic_list] == ["a", "b", "c"]  # never the unreachable
    clock.now += 5
    assert ids(endpoint_set) == ["a", "c", "d"]  # both ejections served their time
    assert endpoint_set.shortfall == 0.25
    assert EndpointSet("empty").shortfall == 0.0

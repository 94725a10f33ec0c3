"""The suite every registry backend passes: one behaviour, whatever the storage.

Real time throughout, with short leases, so the timing paths are the ones
production runs.  The sqlite-only tests at the end check what only a shared
file can do: several registry objects, and processes, seeing one another.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from flotilla.errors import ConfigError, FailedPrecondition, InvalidArgument, NotFound
from flotilla.registry import Health, Instance, MemoryRegistry, Registry, SqliteRegistry

TTL = 0.3  # short enough to keep the suite fast, long enough to survive a loaded CI box
CHILD_TTL = 0.6  # a subprocess competes for the CPU: give its heartbeats more slack
POLL = 0.05
WAIT = 3.0  # the most any single wait may take before the test fails instead of hanging

Watch = aclosing[AsyncGenerator[list[Instance], None]]


def inst(id: str, service: str = "svc", **kw: Any) -> Instance:
    return Instance(id=id, service=service, address="127.0.0.1:9000", **kw)


def watch(registry: Registry, service: str | None = None) -> Watch:
    # aclosing: a watch left open must not outlive the test's event loop.  Every
    # backend's watch() is an async generator, which the Protocol types loosely.
    return aclosing(registry.watch(service))


async def next_snapshot(it: AsyncIterator[list[Instance]]) -> list[Instance]:
    async with asyncio.timeout(WAIT):
        return await anext(it)


@pytest.fixture(params=["memory", "sqlite"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Registry]:
    reg: Registry
    if request.param == "memory":
        reg = MemoryRegistry()
    else:
        reg = SqliteRegistry(tmp_path / "registry.db", poll_interval=POLL)
    try:
        yield reg
    finally:
        await reg.aclose()


async def test_register_then_list(registry: Registry) -> None:
    a = inst("a", version="2", health=Health.HEALTHY, metadata={"zone": "eu", "weight": "3"})
    await registry.register(a, ttl=60)
    assert await registry.list() == [a]
    assert await registry.list("svc") == [a]


async def test_list_filters_by_service_and_sorts_by_id(registry: Registry) -> None:
    for i in ["c", "a", "b"]:
        await registry.register(inst(i), ttl=60)
    await registry.register(inst("x", service="other"), ttl=60)
    assert [i.id for i in await registry.list("svc")] == ["a", "b", "c"]
    assert [i.id for i in await registry.list("other")] == ["x"]
    assert [i.id for i in await registry.list()] == ["a", "b", "c", "x"]
    assert await registry.list("nobody") == []


async def test_register_replaces_same_id(registry: Registry) -> None:
    await registry.register(inst("a", version="1"), ttl=60)
    await registry.register(inst("a", version="2", service="moved"), ttl=60)
    assert await registry.list() == [inst("a", version="2", service="moved")]


async def test_deregister(registry: Registry) -> None:
    await registry.register(inst("a"), ttl=60)
    await registry.register(inst("b"), ttl=60)
    await registry.deregister("a")
    await registry.deregister("never-registered")
    assert await registry.list() == [inst("b")]


async def test_heartbeat_renews_lease(registry: Registry) -> None:
    await registry.register(inst("a"), ttl=TTL)
    start = time.monotonic()
    while time.monotonic() - start < 1.5 * TTL:  # well past the first lease
        await asyncio.sleep(TTL / 5)
        await registry.heartbeat("a")
    assert await registry.list() == [inst("a")]


async def test_lease_expiry_removes_from_list(registry: Registry) -> None:
    await registry.register(inst("a"), ttl=TTL)
    await registry.register(inst("b"), ttl=60)
    assert [i.id for i in await registry.list()] == ["a", "b"]
    await asyncio.sleep(TTL + 0.1)
    assert await registry.list() == [inst("b")]


async def test_lease_expiry_seen_by_watch(registry: Registry) -> None:
    start = time.monotonic()  # before register: its lease may start before it returns
    await registry.register(inst("a"), ttl=TTL)
    async with watch(registry, "svc") as it:
        assert await next_snapshot(it) == [inst("a")]
        # Nobody calls the registry from here on: expiry alone must wake the watch.
        assert await next_snapshot(it) == []
    assert time.monotonic() - start >= TTL * 0.95  # not before the lease ran out


async def test_heartbeat_after_expiry_raises_not_found(registry: Registry) -> None:
    await registry.register(inst("a"), ttl=TTL)
    await asyncio.sleep(TTL + 0.1)
    with pytest.raises(NotFound):
        await registry.heartbeat("a")
    with pytest.raises(NotFound):
        await registry.heartbeat("never-registered")
    await registry.register(inst("b"), ttl=60)
    await registry.deregister("b")
    with pytest.raises(NotFound):
        await registry.heartbeat("b")


async def test_health_change_is_seen_by_watch(registry: Registry) -> None:
    await registry.register(inst("a"), ttl=60)
    async with watch(registry) as it:
        assert await next_snapshot(it) == [inst("a")]
        await registry.heartbeat("a", health=Health.UNHEALTHY)
        assert await next_snapshot(it) == [inst("a", health=Health.UNHEALTHY)]
    assert await registry.list() == [inst("a", health=Health.UNHEALTHY)]


async def test_watch_yields_initial_then_changes_never_equal(registry: Registry) -> None:
    a, b = inst("a"), inst("b")
    states = [[], [a], [a, b], [b]]
    seen: list[list[Instance]] = []

    async def consume() -> None:
        async with watch(registry, "svc") as it:
            async for snapshot in it:
                seen.append(snapshot)
                if snapshot == states[-1]:
                    return

    async with asyncio.timeout(WAIT), asyncio.TaskGroup() as tg:
        tg.create_task(consume())
        await asyncio.sleep(2 * POLL)
        await registry.register(a, ttl=60)
        await asyncio.sleep(2 * POLL)
        # Neither the same registration again, nor a bare renewal, nor the
        # health it already has, changes the snapshot.
        await registry.register(a, ttl=60)
        await registry.heartbeat("a")
        await registry.heartbeat("a", health=Health.UNKNOWN)
        await asyncio.sleep(2 * POLL)
        await registry.register(b, ttl=60)
        await asyncio.sleep(2 * POLL)
        await registry.deregister("a")

    assert seen[0] == []
    assert seen[-1] == [b]
    assert all(s in states for s in seen)
    assert all(x != y for x, y in itertools.pairwise(seen))


async def test_watch_of_one_service_ignores_another(registry: Registry) -> None:
    async with watch(registry, "svc") as it:
        assert await next_snapshot(it) == []
        await registry.register(inst("x", service="other"), ttl=TTL)
        await registry.register(inst("y", service="other"), ttl=60)
        await asyncio.sleep(TTL + 0.1)  # "x" expires unseen, "y" changes health unseen
        await registry.heartbeat("y", health=Health.HEALTHY)
        await registry.register(inst("a"), ttl=60)
        # The next snapshot is the registration in "svc", not a repeat of [].
        assert await next_snapshot(it) == [inst("a")]


async def test_aclose_ends_active_watch(registry: Registry) -> None:
    async with watch(registry) as it:
        assert await next_snapshot(it) == []
        pending = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.01)
        await registry.aclose()
        with pytest.raises(StopAsyncIteration):
            async with asyncio.timeout(WAIT):
                await pending


async def test_aclose_is_idempotent(registry: Registry) -> None:
    await registry.register(inst("a"), ttl=60)
    await registry.aclose()
    await registry.aclose()  # and once more by the fixture


async def test_closed_registry_refuses_calls(registry: Registry) -> None:
    await registry.aclose()
    with pytest.raises(FailedPrecondition, match="closed"):
        await registry.register(inst("a"), ttl=60)
    with pytest.raises(FailedPrecondition, match="closed"):
        await registry.list()
    async with watch(registry) as it:
        assert [s async for s in it] == []  # a watch of a closed registry just ends


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
async def test_register_refuses_a_useless_ttl(registry: Registry, ttl: float) -> None:
    with pytest.raises(InvalidArgument, match="ttl"):
        await registry.register(inst("a"), ttl=ttl)
    assert await registry.list() == []


# -- sqlite only: one file, several registries -------------------------------


async def test_sqlite_registries_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "registry.db"  # parents are created
    one = SqliteRegistry(path, poll_interval=POLL)
    two = SqliteRegistry(path, poll_interval=POLL)
    try:
        async with watch(two, "svc") as it:
            assert await next_snapshot(it) == []
            await one.register(inst("a"), ttl=60)
            assert await next_snapshot(it) == [inst("a")]
            await two.heartbeat("a", health=Health.HEALTHY)  # renewing another's row
            assert await one.list() == [inst("a", health=Health.HEALTHY)]
            await one.deregister("a")
            assert await next_snapshot(it) == []
    finally:
        await one.aclose()
        await two.aclose()


def test_sqlite_poll_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="poll_interval"):
        SqliteRegistry(tmp_path / "registry.db", poll_interval=0)


CHILD = """
import asyncio, sys
from flotilla.registry import Instance, SqliteRegistry

async def main():
    registry = SqliteRegistry(sys.argv[1])
    await registry.register(
        Instance(id="child", service="svc", address="127.0.0.1:7"), ttl=float(sys.argv[2])
    )
    while True:  # heartbeats until SIGKILL; a killed process never deregisters
        await asyncio.sleep(float(sys.argv[2]) / 6)
        await registry.heartbeat("child")

asyncio.run(main())
"""


async def test_sqlite_instance_of_killed_process_expires(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    parent = SqliteRegistry(path, poll_interval=POLL)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(path), str(CHILD_TTL),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with watch(parent, "svc") as it:
            assert await next_snapshot(it) == []
            async with asyncio.timeout(10):  # the child imports flotilla first
                assert await anext(it) == [
                    Instance(id="child", service="svc", address="127.0.0.1:7")
                ]
            await asyncio.sleep(CHILD_TTL + 0.1)  # kept alive by its heartbeats
            assert [i.id for i in await parent.list()] == ["child"]
            child.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert await next_snapshot(it) == []
            assert time.monotonic() - killed < CHILD_TTL + 10 * POLL
    finally:
        if child.returncode is None:
            child.kill()
        _, stderr = await child.communicate()
        await parent.aclose()
        print(stderr.decode(), file=sys.stderr)  # the child's traceback, if it failed
    assert child.returncode == -signal.SIGKILL

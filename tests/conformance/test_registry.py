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
from tests.servers import delete_bucket, unique_name

from flotilla.errors import ConfigError, FailedPrecondition, InvalidArgument, NotFound
from flotilla.registry import (
    Health,
    Instance,
    MemoryRegistry,
    MethodInfo,
    Registry,
    SqliteRegistry,
)
from flotilla.registry.nats_kv import NatsKvRegistry

TTL = 0.3  # short enough to keep the suite fast, long enough to survive a loaded CI box
CHILD_TTL = 2.0  # a subprocess competes for the CPU (a busy box): give its heartbeats slack
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


@pytest.fixture(params=["memory", "sqlite", "nats"])
async def registry(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Registry]:
    reg: Registry
    bucket = unique_name("registry")  # a NATS bucket of its own, deleted after
    if request.param == "memory":
        reg = MemoryRegistry()
    elif request.param == "sqlite":
        reg = SqliteRegistry(tmp_path / "registry.db", poll_interval=POLL)
    else:
        reg = NatsKvRegistry(request.getfixturevalue("nats_url"), bucket=bucket)
    try:
        yield reg
    finally:
        await reg.aclose()
        if isinstance(reg, NatsKvRegistry):
            await delete_bucket(request.getfixturevalue("nats_url"), bucket)


async def registered(registry: Registry, *instances: Instance, ttl: float = 60) -> str:
    """A new lease with ``instances`` under it."""
    lease = await registry.grant(ttl)
    for instance in instances:
        await registry.register(instance, lease=lease)
    return lease


async def test_register_then_list(registry: Registry) -> None:
    a = inst("a", version="2", health=Health.HEALTHY, metadata={"zone": "eu", "weight": "3"})
    await registered(registry, a)
    assert await registry.list() == [a]
    assert await registry.list("svc") == [a]


async def test_method_tables_and_metadata_round_trip(registry: Registry) -> None:
    methods = (
        MethodInfo(
            name="get",
            timeout=2.5,
            idempotent=True,
            params={"type": "object", "properties": {"id": {"type": "integer"}}},
            result={"type": "string", "maxLength": 10},
        ),
        MethodInfo(name="put"),
    )
    a = inst("a", metadata={"pid": "42", "replica": "1", "ünï": "çødé"}, methods=methods)
    await registered(registry, a)
    assert await registry.list() == [a]
    async with watch(registry) as it:
        assert await next_snapshot(it) == [a]


async def test_list_filters_by_service_and_sorts_by_id(registry: Registry) -> None:
    await registered(registry, inst("c"), inst("a"), inst("b"), inst("x", service="other"))
    assert [i.id for i in await registry.list("svc")] == ["a", "b", "c"]
    assert [i.id for i in await registry.list("other")] == ["x"]
    assert [i.id for i in await registry.list()] == ["a", "b", "c", "x"]
    assert await registry.list("nobody") == []


async def test_register_replaces_same_id(registry: Registry) -> None:
    lease = await registered(registry, inst("a", version="1"))
    await registry.register(inst("a", version="2", service="moved"), lease=lease)
    assert await registry.list() == [inst("a", version="2", service="moved")]


async def test_register_again_under_another_lease_moves_the_instance(registry: Registry) -> None:
    old = await registered(registry, inst("a", version="1"))
    await registered(registry, inst("a", version="2"))
    await registry.revoke(old)  # no longer a's lease: a stays
    assert await registry.list() == [inst("a", version="2")]


async def test_deregister_removes_one_instance(registry: Registry) -> None:
    lease = await registered(registry, inst("a"), inst("b"))
    await registry.deregister("a")
    await registry.deregister("never-registered")
    assert await registry.list() == [inst("b")]
    await registry.keepalive(lease)  # the lease lives on with b


async def test_revoke_removes_every_instance_of_the_lease(registry: Registry) -> None:
    lease = await registered(registry, inst("a"), inst("b"), inst("x", service="other"))
    await registered(registry, inst("c"))
    await registry.revoke(lease)
    assert await registry.list() == [inst("c")]
    with pytest.raises(NotFound):
        await registry.keepalive(lease)
    with pytest.raises(NotFound):
        await registry.register(inst("d"), lease=lease)
    await registry.revoke(lease)  # again, and an unknown one: not errors
    await registry.revoke("never-granted")


async def test_revoke_is_seen_by_watch_at_once(registry: Registry) -> None:
    lease = await registered(registry, inst("a"), inst("b"))
    async with watch(registry) as it:
        assert await next_snapshot(it) == [inst("a"), inst("b")]
        await registry.revoke(lease)
        # Both together: never a snapshot with only one of them.
        assert await next_snapshot(it) == []


async def test_keepalive_renews_every_instance_of_the_lease(registry: Registry) -> None:
    # A lease longer than TTL: a busy machine may leave a gap of a few tenths
    # of a second between two keepalives.
    ttl = 1.0
    lease = await registered(registry, inst("a"), inst("b"), ttl=ttl)
    start = time.monotonic()
    while time.monotonic() - start < 1.5 * ttl:  # past the first lease
        await asyncio.sleep(ttl / 10)
        await registry.keepalive(lease)
    assert await registry.list() == [inst("a"), inst("b")]


async def test_expired_lease_takes_its_instances_away(registry: Registry) -> None:
    await registered(registry, inst("a"), inst("c"), ttl=TTL)
    await registered(registry, inst("b"))
    assert [i.id for i in await registry.list()] == ["a", "b", "c"]
    await asyncio.sleep(TTL + 0.1)
    assert await registry.list() == [inst("b")]


async def test_lease_expiry_seen_by_watch(registry: Registry) -> None:
    start = time.monotonic()  # before grant: its lease may start before it returns
    await registered(registry, inst("a"), ttl=TTL)
    async with watch(registry, "svc") as it:
        assert await next_snapshot(it) == [inst("a")]
        # Nobody calls the registry from here on: expiry alone must wake the watch.
        assert await next_snapshot(it) == []
    assert time.monotonic() - start >= TTL * 0.95  # not before the lease ran out


async def test_dead_lease_refuses_keepalive_register_and_set_health(registry: Registry) -> None:
    lease = await registered(registry, inst("a"), ttl=TTL)
    await asyncio.sleep(TTL + 0.1)
    with pytest.raises(NotFound):
        await registry.keepalive(lease)
    with pytest.raises(NotFound):
        await registry.register(inst("b"), lease=lease)
    with pytest.raises(NotFound):
        await registry.set_health("a", Health.HEALTHY)
    with pytest.raises(NotFound):
        await registry.keepalive("never-granted")
    with pytest.raises(NotFound):
        await registry.register(inst("b"), lease="never-granted")
    assert await registry.list() == []
    # A new lease brings the instances back, as a lease keeper does.
    await registered(registry, inst("a"))
    assert await registry.list() == [inst("a")]


async def test_set_health_of_an_unknown_or_deregistered_instance(registry: Registry) -> None:
    await registered(registry, inst("a"))
    await registry.deregister("a")
    with pytest.raises(NotFound, match="'a'"):
        await registry.set_health("a", Health.HEALTHY)
    with pytest.raises(NotFound):
        await registry.set_health("never-registered", Health.HEALTHY)


async def test_health_change_is_seen_by_watch(registry: Registry) -> None:
    await registered(registry, inst("a"))
    async with watch(registry) as it:
        assert await next_snapshot(it) == [inst("a")]
        await registry.set_health("a", Health.UNHEALTHY)
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
        lease = await registry.grant(60)
        await asyncio.sleep(2 * POLL)
        await registry.register(a, lease=lease)
        await asyncio.sleep(2 * POLL)
        # Neither the same registration again, nor a bare renewal, nor the
        # health it already has, changes the snapshot.
        await registry.register(a, lease=lease)
        await registry.keepalive(lease)
        await registry.set_health("a", Health.UNKNOWN)
        await asyncio.sleep(2 * POLL)
        await registry.register(b, lease=lease)
        await asyncio.sleep(2 * POLL)
        await registry.deregister("a")

    assert seen[0] == []
    assert seen[-1] == [b]
    assert all(s in states for s in seen)
    assert all(x != y for x, y in itertools.pairwise(seen))


async def test_watch_of_one_service_ignores_another(registry: Registry) -> None:
    async with watch(registry, "svc") as it:
        assert await next_snapshot(it) == []
        await registered(registry, inst("x", service="other"), ttl=TTL)
        await registered(registry, inst("y", service="other"))
        await asyncio.sleep(TTL + 0.1)  # "x" expires unseen, "y" changes health unseen
        await registry.set_health("y", Health.HEALTHY)
        await registered(registry, inst("a"))
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


async def test_aclose_is_idempotent_and_leaves_the_registry_closed(registry: Registry) -> None:
    await registered(registry, inst("a"))
    await registry.aclose()
    await registry.aclose()  # a second close neither raises nor reopens anything
    with pytest.raises(FailedPrecondition, match="closed"):
        await registry.list()
    with pytest.raises(FailedPrecondition, match="closed"):
        await registry.grant(60)


async def test_closed_registry_refuses_calls(registry: Registry) -> None:
    lease = await registry.grant(60)
    await registry.aclose()
    calls = [
        registry.grant(60),
        registry.register(inst("a"), lease=lease),
        registry.keepalive(lease),
        registry.set_health("a", Health.HEALTHY),
        registry.revoke(lease),
        registry.deregister("a"),
        registry.list(),
    ]
    for call in calls:
        with pytest.raises(FailedPrecondition, match="closed"):
            await call
    async with watch(registry) as it:
        assert [s async for s in it] == []  # a watch of a closed registry just ends


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
async def test_grant_refuses_a_useless_ttl(registry: Registry, ttl: float) -> None:
    with pytest.raises(InvalidArgument, match="ttl"):
        await registry.grant(ttl)


# -- sqlite only: one file, several registries -------------------------------


async def test_sqlite_registries_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "registry.db"  # parents are created
    one = SqliteRegistry(path, poll_interval=POLL)
    two = SqliteRegistry(path, poll_interval=POLL)
    try:
        async with watch(two, "svc") as it:
            assert await next_snapshot(it) == []
            lease = await registered(one, inst("a"), inst("b"))
            assert await next_snapshot(it) == [inst("a"), inst("b")]
            await two.keepalive(lease)  # renewing another's lease
            await two.set_health("a", Health.HEALTHY)
            assert await one.list() == [inst("a", health=Health.HEALTHY), inst("b")]
            await one.deregister("b")
            assert await next_snapshot(it) == [inst("a", health=Health.HEALTHY)]
            await two.revoke(lease)
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
    lease = await registry.grant(float(sys.argv[2]))
    for id in ["child-a", "child-b"]:
        await registry.register(Instance(id=id, service="svc", address="127.0.0.1:7"), lease=lease)
    while True:  # keepalives until SIGKILL; a killed process never revokes
        await asyncio.sleep(float(sys.argv[2]) / 6)
        await registry.keepalive(lease)

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
                # Two registrations, two transactions: a poll may fall between them.
                while [i.id for i in await anext(it)] != ["child-a", "child-b"]:
                    pass
            await asyncio.sleep(CHILD_TTL + 0.1)  # kept alive by its keepalives
            assert [i.id for i in await parent.list()] == ["child-a", "child-b"]
            child.send_signal(signal.SIGKILL)
            async with asyncio.timeout(CHILD_TTL + WAIT):  # the lease runs out, then a poll
                assert await anext(it) == []  # both at once, never one alone
    finally:
        if child.returncode is None:
            child.kill()
        _, stderr = await child.communicate()
        await parent.aclose()
        print(stderr.decode(), file=sys.stderr)  # the child's traceback, if it failed
    assert child.returncode == -signal.SIGKILL

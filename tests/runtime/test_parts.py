"""A node is a list of parts, started in order and stopped in reverse (flotilla.runtime.parts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from flotilla import Node, NodeConfig, Service, Timings, rpc
from flotilla.registry import MemoryRegistry

FAST = NodeConfig(timings=Timings(ttl=1.0, heartbeat=0.2, grace=0.0, drain=1.0))


class Echo(Service, name="echo"):
    def __init__(self, log: list[str]) -> None:
        self.log = log

    @rpc
    async def ping(self) -> str:
        return "pong"

    async def on_start(self) -> None:
        self.log.append("echo on_start")

    async def on_stop(self) -> None:
        self.log.append("echo on_stop")


class FakePart:
    """A part that logs its start and stop, and fails either when told to."""

    def __init__(
        self, name: str, log: list[str], *, fail_start: bool = False, fail_stop: bool = False
    ) -> None:
        self.name = name
        self.log = log
        self.fail_start = fail_start
        self.fail_stop = fail_stop

    async def start(self) -> None:
        if self.fail_start:
            self.log.append(f"{self.name} start failed")
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"{self.name} start")

    async def stop(self) -> None:
        self.log.append(f"{self.name} stop")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    registry = MemoryRegistry()
    yield registry
    await registry.aclose()


def record(node: Node, log: list[str]) -> None:
    """Log every start and stop of the node's real parts, in the order they happen."""
    for part in node.parts:
        part.start = logged(f"{part.name} start", part.start, log)  # type: ignore[method-assign]
        part.stop = logged(f"{part.name} stop", part.stop, log)  # type: ignore[method-assign]


def logged(
    line: str, step: Callable[[], Awaitable[None]], log: list[str]
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        log.append(line)
        await step()

    return run


def test_a_node_is_caller_events_services_consumers_server_lease_in_that_order() -> None:
    node = Node(Echo([]), config=FAST)
    assert [part.name for part in node.parts] == [
        "caller",
        "events",
        "services",
        "consumers",
        "server",
        "lease",
    ]


async def test_parts_start_in_order_and_stop_in_reverse(registry: MemoryRegistry) -> None:
    log: list[str] = []
    node = Node(Echo(log), config=FAST, registry=registry)
    record(node, log)
    await node.start()
    assert log == [
        "caller start",
        "events start",
        "services start",
        "echo on_start",
        "consumers start",
        "server start",
        "lease start",
    ]
    assert [i.service for i in await registry.list()] == ["echo"]
    log.clear()
    await node.aclose()
    assert log == [
        "lease stop",
        "server stop",
        "consumers stop",
        "services stop",
        "echo on_stop",
        "events stop",
        "caller stop",
    ]
    await node.aclose()  # idempotent: nothing stops twice
    assert len(log) == 7


async def test_an_added_part_starts_last_and_stops_first(registry: MemoryRegistry) -> None:
    log: list[str] = []
    node = Node(Echo(log), config=FAST, registry=registry)
    node.parts.append(FakePart("ops", log))
    async with node:
        assert log == ["echo on_start", "ops start"]
        assert await node.call("echo.ping") == "pong"  # the node works with it
    assert log == ["echo on_start", "ops start", "ops stop", "echo on_stop"]


async def test_a_failing_start_stops_the_started_parts_in_reverse(
    registry: MemoryRegistry,
) -> None:
    log: list[str] = []
    node = Node(Echo(log), config=FAST, registry=registry)
    record(node, log)
    node.parts.append(FakePart("broken", log, fail_start=True))
    node.parts.append(FakePart("never", log))
    with pytest.raises(RuntimeError, match="broken cannot start"):
        await node.start()
    assert log == [
        "caller start",
        "events start",
        "services start",
        "echo on_start",
        "consumers start",
        "server start",
        "lease start",
        "broken start failed",
        # The failed part is not stopped (it undid itself); the rest in reverse.
        "lease stop",
        "server stop",
        "consumers stop",
        "services stop",
        "echo on_stop",
        "events stop",
        "caller stop",
    ]
    assert await registry.list() == []  # the lease was revoked
    assert node.server is not None
    host, _, port = node.server.address.rpartition(":")
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        await asyncio.open_connection(host, int(port))
    async with asyncio.timeout(1.0):
        await node.wait_stopped()


async def test_a_part_that_fails_to_stop_does_not_keep_the_others_up(
    registry: MemoryRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    node = Node(config=FAST, registry=registry)
    node.parts += [FakePart("a", log), FakePart("b", log, fail_stop=True), FakePart("c", log)]
    await node.start()
    await node.aclose()
    assert log == ["a start", "b start", "c start", "c stop", "b stop", "a stop"]
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "stopping the b of the node failed" in logged.getMessage()

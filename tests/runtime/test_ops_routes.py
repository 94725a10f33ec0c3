"""A node's ops port over real HTTP: liveness, readiness following the checks, status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flotilla import Node, NodeConfig, Service, Timings, rpc
from flotilla.health import health_check
from flotilla.registry import MemoryRegistry
from flotilla.resilience.signals import SignalKind
from flotilla.testing import wait_for

TIMINGS = Timings(ttl=1.0, heartbeat=0.05, grace=0.0, drain=1.0)


class Orders(Service, name="orders"):
    def __init__(self) -> None:
        self.database_up = True

    @rpc
    async def ping(self) -> str:
        return "pong"

    @health_check(interval=0.02, timeout=0.5)
    async def database(self) -> bool:
        return self.database_up


async def get(address: str, path: str) -> tuple[int, Any]:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: ops\r\n\r\n".encode())
        async with asyncio.timeout(5):
            response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    registry = MemoryRegistry()
    node = Node(Orders(), config=NodeConfig(timings=TIMINGS, ops_port=0), registry=registry)
    await node.start()
    yield node
    await node.aclose()
    await registry.aclose()


def ops_address(node: Node) -> str:
    (instance,) = node.instances
    return instance.metadata["ops"]


async def test_the_ops_port_is_published_with_each_instance(node: Node) -> None:
    assert node.ops is not None
    assert ops_address(node) == node.ops.address
    assert await get(ops_address(node), "/healthz") == (200, {"alive": True})


async def test_readiness_follows_a_failing_check_both_ways(node: Node) -> None:
    orders = node.services[0]
    assert isinstance(orders, Orders)
    assert await get(ops_address(node), "/readyz") == (200, {"ready": True, "state": "running"})
    orders.database_up = False
    await wait_for(lambda: node.health is not None and node.health.health("orders") != "healthy")
    status, body = await get(ops_address(node), "/readyz")
    assert status == 503
    assert body == {
        "ready": False,
        "state": "running",
        "failing": [{"service": "orders", "check": "database", "reason": "returned False"}],
    }
    assert (await get(ops_address(node), "/healthz"))[0] == 200  # alive all the same
    orders.database_up = True
    await wait_for(lambda: node.health is not None and node.health.health("orders") == "healthy")
    assert (await get(ops_address(node), "/readyz"))[0] == 200


async def test_a_stopping_node_is_not_ready_while_it_drains() -> None:
    registry = MemoryRegistry()
    timings = Timings(ttl=1.0, heartbeat=0.05, grace=0.3, drain=1.0)
    node = Node(Orders(), config=NodeConfig(timings=timings, ops_port=0), registry=registry)
    await node.start()
    address = ops_address(node)
    stopping = asyncio.ensure_future(node.aclose())
    try:
        await wait_for(lambda: node.state == "stopping")
        assert await get(address, "/readyz") == (503, {"ready": False, "state": "stopping"})
    finally:
        await stopping
        await registry.aclose()
    assert node.state == "stopped"


async def test_status_shows_instances_checks_and_the_breakers_not_closed(node: Node) -> None:
    node.signals.emit(SignalKind.BREAKER_OPENED, "catalog", endpoint="catalog-1")
    node.signals.emit(SignalKind.BREAKER_OPENED, "catalog", endpoint="catalog-2")
    node.signals.emit(SignalKind.BREAKER_HALF_OPEN, "catalog", endpoint="catalog-2")
    node.signals.emit(SignalKind.BREAKER_OPENED, "carts", endpoint="carts-1")
    node.signals.emit(SignalKind.BREAKER_CLOSED, "carts", endpoint="carts-1")
    node.signals.emit(SignalKind.RETRY, "catalog", method="get")
    status, body = await get(ops_address(node), "/status")
    assert status == 200
    assert body["state"] == "running"
    (instance,) = node.instances
    assert body["instances"] == [
        {
            "id": instance.id,
            "service": "orders",
            "address": node.address,
            "health": "healthy",
        }
    ]
    assert {(c["check"], c["ok"]) for c in body["checks"]} == {("health", True), ("database", True)}
    breakers = [(b["service"], b["endpoint"], b["state"]) for b in body["breakers"]]
    assert breakers == [("catalog", "catalog-1", "open"), ("catalog", "catalog-2", "half_open")]
    assert [s["kind"] for s in body["signals"]][-1] == "retry"
    assert len(body["signals"]) == 6


async def test_a_node_without_ops_port_opens_none() -> None:
    registry = MemoryRegistry()
    async with Node(Orders(), config=NodeConfig(timings=TIMINGS), registry=registry) as node:
        assert node.ops is None
        assert "ops" not in node.instances[0].metadata
    await registry.aclose()


class SlowFirstCheck(Service, name="slow-first"):
    """Its check answers only once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    @health_check(interval=1, timeout=5)
    async def warm(self) -> bool:
        await self.release.wait()
        return True


async def test_a_starting_node_says_so_and_which_checks_have_no_result_yet() -> None:
    registry = MemoryRegistry()
    service = SlowFirstCheck()
    node = Node(service, config=NodeConfig(timings=TIMINGS, ops_port=0), registry=registry)
    starting = asyncio.ensure_future(node.start())
    try:
        # The default check has answered: the first round runs, the ops port is up.
        await wait_for(lambda: node.health is not None and node.health.results()[0] is not None)
        assert node.ops is not None
        status, body = await get(node.ops.address, "/readyz")
        assert (status, body) == (
            503,
            {
                "ready": False,
                "state": "starting",
                "failing": [{"service": "slow-first", "check": "warm", "reason": "no result yet"}],
            },
        )
        assert await registry.list() == []  # not registered before its first result
        service.release.set()
        await starting
        assert (await get(node.ops.address, "/readyz"))[0] == 200
    finally:
        service.release.set()
        await starting
        await node.aclose()
        await registry.aclose()

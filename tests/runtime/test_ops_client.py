"""Reading ops ports: a node fed breaker signals, one that does not answer, one that is not ours."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from flotilla import Health, Instance, Node, NodeConfig, Service, Timings, rpc
from flotilla.registry import MemoryRegistry
from flotilla.resilience.signals import SignalKind
from flotilla.runtime.ops_client import UNREACHABLE, breaker_summaries, fetch_json


class Caller(Service, name="caller"):
    @rpc
    async def ping(self) -> str:
        return "pong"


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    registry = MemoryRegistry()
    timings = Timings(ttl=1.0, heartbeat=0.1, grace=0.0, drain=1.0)
    node = Node(Caller(), config=NodeConfig(timings=timings, ops_port=0), registry=registry)
    await node.start()
    yield node
    await node.aclose()
    await registry.aclose()


def instance(ops: str | None) -> Instance:
    metadata = {"ops": ops} if ops else {}
    return Instance(
        id=f"x-{ops}", service="x", address="127.0.0.1:1", health=Health.HEALTHY, metadata=metadata
    )


async def silent_port() -> tuple[asyncio.Server, str]:
    """A port that accepts connections and never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    return server, f"{host}:{port}"


async def test_the_breakers_a_node_holds_are_summarized_per_ops_address(node: Node) -> None:
    (registered,) = node.instances
    ops = registered.metadata["ops"]
    assert await breaker_summaries([registered]) == {ops: "closed"}
    node.signals.emit(SignalKind.BREAKER_OPENED, "catalog", endpoint="catalog-1")
    node.signals.emit(SignalKind.BREAKER_OPENED, "catalog", endpoint="catalog-2")
    node.signals.emit(SignalKind.BREAKER_HALF_OPEN, "carts", endpoint="carts-1")
    assert await breaker_summaries([registered]) == {ops: "2 open, 1 half_open"}


async def test_a_port_that_does_not_answer_is_unknown_and_does_not_hold_the_others(
    node: Node,
) -> None:
    server, silent = await silent_port()
    closed = instance("127.0.0.1:1")  # nothing listens on port 1
    try:
        # The timeout of each ask (long enough for a busy machine's live port
        # to answer), all asked at once.
        async with asyncio.timeout(5):
            summaries = await breaker_summaries(
                [node.instances[0], instance(silent), closed, instance(None)], timeout=1.0
            )
    finally:
        server.close()
        await server.wait_closed()
    assert summaries == {
        node.instances[0].metadata["ops"]: "closed",
        silent: UNREACHABLE,
        "127.0.0.1:1": UNREACHABLE,
    }


async def test_an_answer_that_is_not_a_status_is_unknown(node: Node) -> None:
    ops = node.instances[0].metadata["ops"]
    assert await fetch_json(ops, "/nope") is None  # a 404
    assert await fetch_json(ops, "/healthz") == {"alive": True}
    assert await fetch_json("not an address", "/status") is None

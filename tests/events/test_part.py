"""Events on a node: emit from a handler or the node, handlers run by consumers, the stop order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest

from flotilla import Context, Node, NodeConfig, Service, Timings, on_event, rpc
from flotilla.errors import ConfigError, FailedPrecondition, Unavailable
from flotilla.events.memory import MemoryEvents
from flotilla.registry import MemoryRegistry
from flotilla.testing import wait_for

FAST = NodeConfig(timings=Timings(ttl=1.0, heartbeat=0.2, grace=0.0, drain=1.0))


class OrderPlaced(msgspec.Struct):
    id: int


class Orders(Service, name="orders"):
    @rpc
    async def place(self, ctx: Context, id: int) -> str:
        ctx.set_meta(tenant="acme")
        return await ctx.emit("order.placed", OrderPlaced(id), key=str(id))


class Billing(Service, name="billing"):
    def __init__(self) -> None:
        self.seen: list[tuple[int, Context]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.log: list[str] = []
        self.started = 0

    @on_event("order.placed")
    async def charge(self, order: OrderPlaced, ctx: Context) -> None:
        self.started += 1
        await self.release.wait()
        self.seen.append((order.id, ctx))
        self.log.append(f"handled {order.id}")

    async def on_stop(self) -> None:
        self.log.append("on_stop")


class Cache(Service, name="cache"):
    def __init__(self) -> None:
        self.evicted: list[int] = []

    @on_event("order.placed", broadcast=True)
    async def evict(self, order: OrderPlaced) -> None:
        self.evicted.append(order.id)


@pytest.fixture
async def shared() -> AsyncIterator[tuple[MemoryRegistry, MemoryEvents]]:
    registry, events = MemoryRegistry(), MemoryEvents()
    yield registry, events
    await events.aclose()
    await registry.aclose()


async def test_an_event_emitted_in_a_call_reaches_the_handler_with_the_call_headers(
    shared: tuple[MemoryRegistry, MemoryEvents],
) -> None:
    registry, events = shared
    billing = Billing()
    async with (
        Node(Orders(), config=FAST, registry=registry, events=events) as orders,
        Node(billing, config=FAST, registry=registry, events=events),
    ):
        event_id = await orders.call("orders.place", id=7)
        await wait_for(lambda: len(billing.seen) == 1)
        order_id, ctx = billing.seen[0]
        assert order_id == 7
        assert ctx.event is not None
        assert ctx.event.id == event_id
        assert (ctx.event.source, ctx.event.instance) == ("orders", orders.instance_ids["orders"])
        assert ctx.event.key == "7"
        assert ctx.meta == {"tenant": "acme"}  # the emitting call's headers
        assert ctx.caller == "orders"
        assert ctx.deadline is None  # an event outlives its call's deadline
        assert ctx.service == "billing"


async def test_node_emit_and_a_group_of_replicas_handles_each_event_once(
    shared: tuple[MemoryRegistry, MemoryEvents],
) -> None:
    registry, events = shared
    replicas = [Billing(), Billing()]
    async with Node(config=FAST, registry=registry, events=events) as client:
        nodes = [Node(b, config=FAST, registry=registry, events=events) for b in replicas]
        for node in nodes:
            await node.start()
        for n in range(10):
            await client.emit("order.placed", OrderPlaced(n))
        await wait_for(lambda: sum(len(b.seen) for b in replicas) == 10)
        handled = sorted(order for b in replicas for order, _ in b.seen)
        assert handled == list(range(10))
        for node in nodes:
            await node.aclose()


async def test_broadcast_reaches_every_instance(
    shared: tuple[MemoryRegistry, MemoryEvents],
) -> None:
    registry, events = shared
    caches = [Cache(), Cache()]
    async with Node(config=FAST, registry=registry, events=events) as client:
        nodes = [Node(c, config=FAST, registry=registry, events=events) for c in caches]
        for node in nodes:
            await node.start()
        await client.emit("order.placed", OrderPlaced(1))
        await wait_for(lambda: all(c.evicted == [1] for c in caches))
        for node in nodes:
            await node.aclose()


async def test_a_stopping_node_finishes_running_handlers_before_on_stop(
    shared: tuple[MemoryRegistry, MemoryEvents],
) -> None:
    registry, events = shared
    billing = Billing()
    billing.release.clear()
    node = Node(billing, config=FAST, registry=registry, events=events)
    await node.start()
    await node.emit("order.placed", OrderPlaced(1))
    await wait_for(lambda: billing.started == 1)
    stopping = asyncio.create_task(node.aclose())
    done, _ = await asyncio.wait({stopping}, timeout=0.05)
    assert not done  # the drain waits for the handler
    billing.release.set()
    await stopping
    assert billing.log == ["handled 1", "on_stop"]


async def test_a_node_opens_its_own_backend_from_the_url_and_closes_it() -> None:
    node = Node(Billing(), config=FAST.replace(events="memory://"))
    async with node:
        await node.emit("order.placed", OrderPlaced(1))
        backend = await node.events.backend()
        assert await backend.topics() == ["order.placed"]
    with pytest.raises(Unavailable, match="closed"):
        await node.emit("order.placed", OrderPlaced(2))


def test_an_unknown_events_scheme_is_refused_with_the_config() -> None:
    with pytest.raises(ConfigError, match="unknown events URL 'kafka://x'; known schemes: memory"):
        NodeConfig(events="kafka://x")


async def test_a_context_without_an_emitter_says_so() -> None:
    ctx = Context(invoker=None)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition, match="cannot emit 'x': this context has no event"):
        await ctx.emit("x", 1)

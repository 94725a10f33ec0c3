"""A system on NATS end to end: nodes find each other in the KV registry and talk by JetStream.

The README's orders and billing, on two nodes that share nothing but the
server: a call goes through the registry, the event through the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from tests.servers import delete_bucket, delete_streams, unique_name

from flotilla import Context, Service, on_event, rpc
from flotilla.runtime.config import NodeConfig, Timings
from flotilla.runtime.node import Node

WAIT = 10.0


class OrderPlaced(msgspec.Struct):
    order_id: int
    total: int


class Orders(Service, name="orders"):
    @rpc
    async def place(self, ctx: Context, order_id: int, total: int) -> None:
        await ctx.emit("order.placed", OrderPlaced(order_id, total), key=str(order_id))


class Billing(Service, name="billing"):
    def __init__(self) -> None:
        self.charged: list[int] = []
        self.changed = asyncio.Event()

    @on_event("order.placed")
    async def charge(self, order: OrderPlaced, ctx: Context) -> None:
        self.charged.append(order.order_id)
        self.changed.set()


@pytest.fixture
async def config(nats_url: str) -> AsyncIterator[NodeConfig]:
    bucket, prefix = unique_name("registry"), unique_name("EV")
    yield NodeConfig(
        registry=f"{nats_url}?bucket={bucket}",
        events=f"{nats_url}?prefix={prefix}&poll=0.1",
        secret=b"s" * 32,
        timings=Timings(ttl=2.0, heartbeat=0.5, grace=0.0, drain=1.0),
    )
    await delete_bucket(nats_url, bucket)
    await delete_streams(nats_url, [prefix, f"{prefix}_DLQ"])


async def test_a_call_and_its_event_cross_nodes_through_nats(config: NodeConfig) -> None:
    billing = Billing()
    async with (
        Node(billing, config=config),
        Node(Orders(), config=config),
        Node(config=config) as caller,
    ):
        async with asyncio.timeout(WAIT):
            while True:  # until the caller's view has the orders node
                try:
                    await caller.call("orders.place", order_id=7, total=120)
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            while billing.charged != [7]:
                billing.changed.clear()
                await billing.changed.wait()
    assert billing.charged == [7]

"""The test kit's events: what was emitted, who handled it, redelivery on the fake clock."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from flotilla import Context, NodeConfig, Service, Timings, on_event, rpc
from flotilla.events.policy import DeliveryPolicy
from flotilla.testing import Cluster, FakeClock, wait_for


class OrderPlaced(msgspec.Struct):
    id: int


class Invoice(msgspec.Struct):
    order: int


class Orders(Service, name="orders"):
    @rpc
    async def place(self, ctx: Context, id: int) -> None:
        await ctx.emit("order.placed", OrderPlaced(id), key=str(id))


class Billing(Service, name="billing"):
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures

    @on_event("order.placed")
    async def charge(self, order: OrderPlaced, ctx: Context) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("card declined")
        await ctx.emit("invoice.sent", Invoice(order.id))


CONFIG = NodeConfig(
    timings=Timings(grace=0.0, drain=2.0),
    delivery=DeliveryPolicy(max_deliveries=3, backoff_base=2.0),
)


async def test_see_what_was_emitted_and_who_handled_it() -> None:
    async with Cluster(CONFIG) as cluster:
        await cluster.add(Orders())
        await cluster.add(Billing())
        await cluster.call("orders.place", id=7)
        [outcome] = await cluster.events.wait_handled("order.placed")
        assert (outcome.handler, outcome.group, outcome.result) == (
            "billing.charge",
            "billing",
            "acked",
        )
        assert outcome.instance == cluster.nodes[1].instance_ids["billing"]
        [placed] = cluster.events.emitted("order.placed")
        assert (placed.source, placed.key) == ("orders", "7")
        assert cluster.events.payloads("invoice.sent", Invoice) == [Invoice(7)]


async def test_redelivery_waits_for_the_fake_clock() -> None:
    clock = FakeClock()
    async with Cluster(CONFIG, clock=clock) as cluster:
        await cluster.add(Billing(failures=1))
        await cluster.emit("order.placed", OrderPlaced(1))
        [failed] = await cluster.events.wait_retried("order.placed")
        assert failed.error == "RuntimeError: card declined"
        await clock.advance(1.5)  # the backoff is 2 s: not yet
        assert cluster.events.handled("order.placed") == []
        await clock.advance(0.5)
        [handled] = await cluster.events.wait_handled("order.placed")
        assert handled.envelope.attempt == 2


async def test_dead_letters_after_the_cap_and_for_a_payload_of_the_wrong_type() -> None:
    clock = FakeClock()
    async with Cluster(CONFIG, clock=clock) as cluster:
        await cluster.add(Billing(failures=99))
        await cluster.emit("order.placed", {"id": "seven"})
        [bad] = await cluster.events.wait_dead_lettered("order.placed")
        assert bad.result == "invalid_payload"
        await cluster.emit("order.placed", OrderPlaced(2))
        await cluster.events.wait_retried("order.placed")
        await clock.advance(2)
        await cluster.events.wait_retried("order.placed", count=2)
        await clock.advance(4)
        await cluster.events.wait_dead_lettered("order.placed", count=2)
        letters = await cluster.events.dead_letters("order.placed")
        assert [d.error for d in letters][1] == "RuntimeError: card declined"


async def test_a_wait_that_times_out_says_what_happened() -> None:
    async with Cluster(CONFIG) as cluster:
        await cluster.add(Billing(failures=99))
        await cluster.emit("order.placed", OrderPlaced(1))
        with pytest.raises(TimeoutError, match=r"0 of 1 acked/already_handled deliveries"):
            await cluster.events.wait_handled("order.placed", timeout=0.3)


class Stuck(Service, name="stuck"):
    """Hangs on the first delivery of each event, as a replica about to crash would."""

    def __init__(self) -> None:
        self.hanging = False

    @on_event("order.placed")
    async def handle(self, order: OrderPlaced, ctx: Context) -> None:
        assert ctx.event is not None
        if ctx.event.attempt == 1:
            self.hanging = True
            await asyncio.Event().wait()


async def test_a_crashed_replicas_event_goes_to_another_after_ack_wait() -> None:
    clock = FakeClock()
    config = CONFIG.replace(delivery=DeliveryPolicy(ack_wait=8))
    async with Cluster(config, clock=clock) as cluster:
        replicas = [Stuck(), Stuck()]
        nodes = [(await cluster.add(replica))[0] for replica in replicas]
        await cluster.emit("order.placed", OrderPlaced(1))
        await wait_for(lambda: any(replica.hanging for replica in replicas))
        taker = nodes[0] if replicas[0].hanging else nodes[1]
        await cluster.crash(taker)  # its handler is cut short, the event left unacked
        await clock.advance(7.5)
        assert cluster.events.handled() == []
        await clock.advance(0.5)
        [outcome] = await cluster.events.wait_handled("order.placed")
        assert outcome.envelope.attempt == 2
        assert outcome.instance != taker.instance_ids["stuck"]


class Strict(Service, name="strict"):
    @on_event("order.placed", delivery=DeliveryPolicy(max_deliveries=1))
    async def handle(self, order: OrderPlaced) -> None:
        raise ValueError("never retried")


async def test_a_handler_may_have_a_delivery_policy_of_its_own() -> None:
    async with Cluster(CONFIG) as cluster:  # the node's policy allows 3 deliveries
        await cluster.add(Strict())
        await cluster.emit("order.placed", OrderPlaced(1))
        [outcome] = await cluster.events.wait_dead_lettered("order.placed")
        assert (outcome.envelope.attempt, outcome.error) == (1, "ValueError: never retried")
        assert cluster.events.outcomes == [outcome]  # no retry came first

"""The consumer: what becomes of each delivery, under a fake clock (exact times)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
import pytest

from flotilla.errors import Unavailable
from flotilla.events import AlreadyHandled, Delivery, Envelope, Subscription, new_event_id
from flotilla.events.consumer import Consumer, Outcome
from flotilla.events.memory import MemoryEvents
from flotilla.events.policy import DeliveryPolicy
from flotilla.testing.clock import FakeClock
from flotilla.testing.cluster import wait_for

TOPIC = "order.created"


class Order(msgspec.Struct):
    id: int


def event(payload: Any, *, key: str | None = None) -> Envelope:
    return Envelope(
        id=new_event_id(),
        topic=TOPIC,
        source="orders",
        instance="orders-1",
        time=0.0,
        payload=msgspec.msgpack.encode(payload),
        key=key,
    )


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.backend: MemoryEvents = MemoryEvents(self.clock)
        self.calls: list[tuple[int, int]] = []  # (order id, attempt)
        self.outcomes: list[Outcome] = []
        self.consumers: list[Consumer] = []
        self.behaviour: Any = None  # async (order, envelope) -> None, or None: succeed

    async def handler(self, order: Order, envelope: Envelope) -> None:
        self.calls.append((order.id, envelope.attempt))
        if self.behaviour is not None:
            await self.behaviour(order, envelope)

    async def consumer(
        self, policy: DeliveryPolicy | None = None, instance: str = "i1"
    ) -> Consumer:
        consumer = Consumer(
            self.backend,
            Subscription(topic=TOPIC, group="billing", instance=instance),
            self.handler,
            payload_type=Order,
            name="billing.on_order",
            policy=policy or DeliveryPolicy(max_deliveries=3, backoff_base=0.5, ack_wait=6),
            clock=self.clock,
            observer=self.outcomes.append,
        )
        await consumer.start()
        self.consumers.append(consumer)
        return consumer

    def results(self) -> list[str]:
        return [outcome.result for outcome in self.outcomes]


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    for consumer in harness.consumers:
        await consumer.stop(drain=0)
    await harness.backend.aclose()


async def test_a_handled_event_is_acked_once(h: Harness) -> None:
    await h.consumer()
    await h.backend.publish(event(Order(1)))
    await wait_for(lambda: h.results() == ["acked"])
    assert h.calls == [(1, 1)]
    outcome = h.outcomes[0]
    assert (outcome.group, outcome.instance, outcome.handler) == (
        "billing",
        "i1",
        "billing.on_order",
    )
    await h.clock.advance(60)  # past any ack_wait: it never comes back
    assert h.calls == [(1, 1)]


async def test_a_payload_of_the_wrong_type_is_dead_lettered_at_once(h: Harness) -> None:
    await h.consumer()
    await h.backend.publish(event({"id": "not a number"}))
    await wait_for(lambda: h.results() == ["invalid_payload"])
    assert h.calls == []  # the handler never ran
    [dead] = await h.backend.dead_letters()
    assert dead.group == "billing"
    assert dead.envelope.attempt == 1
    assert "does not fit Order" in dead.error
    assert "Expected `int`, got `str` - at `$.id`" in dead.error


async def test_a_failing_handler_is_retried_with_backoff_then_dead_lettered(h: Harness) -> None:
    async def fail(order: Order, envelope: Envelope) -> None:
        if order.id == 1:
            raise ValueError(f"no stock (attempt {envelope.attempt})")

    h.behaviour = fail
    await h.consumer()
    await h.backend.publish(event(Order(1)))
    await wait_for(lambda: h.calls == [(1, 1)])
    await wait_for(lambda: h.results() == ["retried"])
    # Steps that add up exactly in binary floating point.
    await h.clock.advance(0.375)  # backoff after attempt 1: 0.5 s
    assert h.calls == [(1, 1)]
    await h.clock.advance(0.125)
    await wait_for(lambda: h.calls == [(1, 1), (1, 2)])
    await wait_for(lambda: len(h.outcomes) == 2)
    await h.clock.advance(0.875)  # after attempt 2: 1 s
    assert len(h.calls) == 2
    await h.clock.advance(0.125)
    await wait_for(lambda: h.results() == ["retried", "retried", "dead_lettered"])
    assert h.calls == [(1, 1), (1, 2), (1, 3)]
    [dead] = await h.backend.dead_letters()
    assert dead.error == "ValueError: no stock (attempt 3)"
    # The consumer goes on.
    await h.backend.publish(event(Order(2)))
    await wait_for(lambda: h.calls[-1] == (2, 1))
    await wait_for(lambda: h.results()[-1] == "acked")


async def test_already_handled_is_acked(h: Harness) -> None:
    async def seen(order: Order, envelope: Envelope) -> None:
        raise AlreadyHandled()

    h.behaviour = seen
    await h.consumer()
    await h.backend.publish(event(Order(1)))
    await wait_for(lambda: h.results() == ["already_handled"])
    await h.clock.advance(60)
    assert h.calls == [(1, 1)]


async def test_a_long_handler_keeps_its_delivery_past_ack_wait(h: Harness) -> None:
    release = asyncio.Event()

    async def slow(order: Order, envelope: Envelope) -> None:
        await release.wait()

    h.behaviour = slow
    await h.consumer(instance="i1")
    await h.consumer(instance="i2")
    await h.backend.publish(event(Order(1)))
    await wait_for(lambda: h.calls == [(1, 1)])
    await h.clock.advance(6 * 5)  # five ack_waits; renewed every 2 s
    assert h.calls == [(1, 1)]  # the other consumer never got it
    release.set()
    await wait_for(lambda: h.results() == ["acked"])


async def test_events_of_one_key_run_one_at_a_time_others_concurrently(h: Harness) -> None:
    gates = {n: asyncio.Event() for n in range(4)}

    async def gated(order: Order, envelope: Envelope) -> None:
        await gates[order.id].wait()

    h.behaviour = gated
    await h.consumer()
    for n, key in enumerate(["a", "a", "b", None]):
        await h.backend.publish(event(Order(n), key=key))
    await wait_for(lambda: sorted(h.calls) == [(0, 1), (2, 1), (3, 1)])
    gates[1].set()
    gates[0].set()  # only now may 1 start (same key)
    await wait_for(lambda: (1, 1) in h.calls)
    gates[2].set()
    gates[3].set()
    await wait_for(lambda: h.results().count("acked") == 4)


async def test_a_consumer_at_its_limit_leaves_the_next_event_to_the_group(h: Harness) -> None:
    release = asyncio.Event()

    async def held(order: Order, envelope: Envelope) -> None:
        await release.wait()

    h.behaviour = held
    await h.consumer(DeliveryPolicy(max_concurrent=2), instance="busy")
    for n in range(3):
        await h.backend.publish(event(Order(n)))
    await wait_for(lambda: len(h.calls) == 2)  # two running: it takes no third
    await h.consumer(instance="idle")
    await wait_for(lambda: len(h.calls) == 3)
    release.set()
    await wait_for(lambda: len(h.outcomes) == 3)
    by_instance = {outcome.instance for outcome in h.outcomes if outcome.envelope.topic == TOPIC}
    assert by_instance == {"busy", "idle"}
    assert [o.instance for o in h.outcomes].count("idle") == 1


async def test_stop_lets_running_handlers_finish_within_the_drain(h: Harness) -> None:
    release = asyncio.Event()

    async def slow(order: Order, envelope: Envelope) -> None:
        await release.wait()

    h.behaviour = slow
    consumer = await h.consumer()
    await h.backend.publish(event(Order(1)))
    await wait_for(lambda: h.calls == [(1, 1)])
    stopping = asyncio.create_task(consumer.stop(drain=5))
    done, _ = await asyncio.wait({stopping}, timeout=0.05)
    assert not done  # waiting for the handler
    release.set()
    await stopping
    assert h.results() == ["acked"]
    await h.backend.publish(event(Order(2)))  # taken by nobody: the consumer stopped
    await h.clock.advance(60)
    assert h.calls == [(1, 1)]


async def test_a_handler_cut_by_stop_is_redelivered_after_ack_wait(h: Harness) -> None:
    async def stuck(order: Order, envelope: Envelope) -> None:
        if envelope.attempt == 1:
            await asyncio.Event().wait()

    h.behaviour = stuck
    first = await h.consumer(instance="i1")
    await h.backend.publish(event(Order(1)))
    await wait_for(lambda: h.calls == [(1, 1)])
    await first.stop(drain=0)
    assert h.outcomes == []  # neither acked nor nak'd
    await h.consumer(instance="i2")
    await h.clock.advance(5.75)
    assert h.calls == [(1, 1)]
    await h.clock.advance(0.25)  # ack_wait: 6 s
    await wait_for(lambda: h.calls == [(1, 1), (1, 2)])
    await wait_for(lambda: h.results() == ["acked"])


class Flaky(MemoryEvents):
    """Fails its first ``failures`` subscriptions, as a broker that is down would."""

    def __init__(self, clock: FakeClock, failures: int) -> None:
        super().__init__(clock)
        self.failures = failures
        self.subscribed = 0

    async def subscribe(self, subscription: Subscription) -> AsyncGenerator[Any, None]:
        self.subscribed += 1
        if self.failures:
            self.failures -= 1
            raise Unavailable("connection refused")
        async for delivery in super().subscribe(subscription):
            yield delivery


async def test_a_failing_backend_is_subscribed_again_after_a_growing_pause(h: Harness) -> None:
    flaky = Flaky(h.clock, failures=2)
    h.backend = flaky
    await h.consumer()
    await flaky.publish(event(Order(1)))  # the group was declared: kept for later
    await wait_for(lambda: flaky.subscribed == 1)
    await h.clock.advance(0.5)
    await wait_for(lambda: flaky.subscribed == 2)
    await h.clock.advance(0.75)  # the second pause is 1 s
    assert flaky.subscribed == 2
    await h.clock.advance(0.25)
    await wait_for(lambda: h.calls == [(1, 1)])
    await wait_for(lambda: h.results() == ["acked"])


class SubscriptionRecording(MemoryEvents):
    """Records the subscriptions it is asked for."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.subscriptions: list[Subscription] = []

    def subscribe(self, subscription: Subscription) -> AsyncGenerator[Delivery, None]:
        self.subscriptions.append(subscription)
        return super().subscribe(subscription)


async def test_the_subscription_has_room_for_as_many_as_the_handlers_run_at_once(
    h: Harness,
) -> None:
    backend = h.backend = SubscriptionRecording(h.clock)
    release = asyncio.Event()

    async def held(order: Order, envelope: Envelope) -> None:
        await release.wait()

    h.behaviour = held
    await h.consumer(DeliveryPolicy(max_concurrent=3))
    for n in range(4):
        await h.backend.publish(event(Order(n)))
    await wait_for(lambda: len(h.calls) == 3)
    assert [s.max_in_flight for s in backend.subscriptions] == [3]
    assert len(h.calls) == 3  # no fourth slot: the fourth waits in the group
    release.set()
    await wait_for(lambda: len(h.outcomes) == 4)

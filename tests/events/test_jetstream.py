"""What only the JetStream backend does (the shared behaviour is in tests/conformance)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import msgspec
import pytest
from tests.proxy import TcpProxy
from tests.servers import delete_streams, unique_name

from flotilla.errors import ConfigError, InvalidArgument, Unavailable
from flotilla.events import EVENT_BACKENDS, Envelope, Subscription, new_event_id
from flotilla.events.consumer import Consumer
from flotilla.events.jetstream import DEFAULT_PREFIX, JetStreamEvents
from flotilla.events.jetstream_names import (
    check_topic,
    event_subject,
    partition_of,
    topic_of,
)
from flotilla.events.policy import DeliveryPolicy
from flotilla.testing.cluster import wait_for

WAIT = 10.0


def envelope(topic: str, n: int, key: str | None = None) -> Envelope:
    return Envelope(
        id=new_event_id(),
        topic=topic,
        source="orders",
        instance="orders-1",
        time=time.time(),
        payload=msgspec.msgpack.encode(n),
        key=key,
    )


@pytest.fixture
async def prefix(nats_url: str) -> AsyncIterator[str]:
    name = unique_name("EV")
    yield name
    await delete_streams(nats_url, [name, f"{name}_DLQ"])


def test_url_options() -> None:
    backend = EVENT_BACKENDS.open("nats://127.0.0.1:4222?prefix=SHOP&partitions=4&poll=0.1")
    assert isinstance(backend, JetStreamEvents)
    assert (backend.prefix, backend.partitions, backend.poll) == ("SHOP", 4, 0.1)
    assert JetStreamEvents.from_url("nats://127.0.0.1:4222").prefix == DEFAULT_PREFIX
    assert JetStreamEvents.from_url("nats://127.0.0.1:4222").batch is None
    assert JetStreamEvents.from_url("nats://127.0.0.1:4222?batch=16").batch == 16


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("nats://h:4222?partition=4", "unknown option"),
        ("nats://h:4222?partitions=x", "invalid literal"),
        ("nats://h:4222?partitions=0", "partitions must be"),
        ("nats://h:4222?poll=0", "poll must be positive"),
        ("nats://h:4222?batch=0", "batch must be at least 1"),
        ("nats://h:4222?prefix=a.b", "prefix"),
        ("nats://", "not a NATS URL"),
    ],
)
def test_bad_urls_are_config_errors(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        EVENT_BACKENDS.open(url)


def test_partitions_are_stable_and_spread() -> None:
    # A stable hash: every process, every run, every Python puts a key in one place.
    assert [partition_of(key, 8) for key in ("k1", "k2", "a", "b", "c")] == [0, 6, 7, 5, 3]
    assert len({partition_of(f"key-{n}", 8) for n in range(100)}) == 8


def test_subjects_give_their_topic_back() -> None:
    for topic in ("order", "order.created", "order.n", "a.3"):
        for key in (None, "k1"):
            assert topic_of("P", event_subject("P", topic, key, 8)) == topic
    assert topic_of("P", "P.rp.abc.order") is None
    assert topic_of("P", "Q.ev.order.n") is None


@pytest.mark.parametrize("topic", ["", "a..b", "a b", "a.*", "a.>", ".a", "a."])
def test_a_topic_that_is_no_subject_is_refused(topic: str) -> None:
    with pytest.raises(InvalidArgument, match="dotted words"):
        check_topic(topic)


async def test_publishing_a_bad_topic_says_so_and_sends_nothing() -> None:
    backend = JetStreamEvents("nats://127.0.0.1:1")  # never reached: refused before
    try:
        with pytest.raises(InvalidArgument, match="'order created'"):
            await backend.publish(envelope("order created", 1))
    finally:
        await backend.aclose()


async def test_no_server_is_unavailable(unused_tcp_port: int) -> None:
    backend = JetStreamEvents(f"nats://127.0.0.1:{unused_tcp_port}")
    try:
        with pytest.raises(Unavailable, match="NATS unavailable"):
            await backend.publish(envelope("order.created", 1))
    finally:
        await backend.aclose()


async def test_an_outage_is_unavailable_and_consumers_resume_after(
    nats_url: str, prefix: str
) -> None:
    target = urlsplit(nats_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 4222) as proxy:
        backend = JetStreamEvents(f"nats://127.0.0.1:{proxy.port}", prefix=prefix, timeout=1.0)
        sub = Subscription(topic="order.created", group="billing", instance="i1")
        try:
            await backend.declare(sub)
            await backend.publish(envelope("order.created", 1))
            await proxy.cut()
            with pytest.raises(Unavailable):
                await backend.publish(envelope("order.created", 2))
            await proxy.restore()
            async with asyncio.timeout(WAIT):
                while True:  # until the client has reconnected
                    try:
                        await backend.publish(envelope("order.created", 3))
                        break
                    except Unavailable:
                        await asyncio.sleep(0.1)
                got = []
                async for delivery in backend.subscribe(sub):  # the group kept its place
                    got.append(msgspec.msgpack.decode(delivery.envelope.payload))
                    await delivery.ack()
                    if got[-1] == 3:
                        break
            assert got[0] == 1
            assert got[-1] == 3
        finally:
            await backend.aclose()


async def test_closing_the_backend_ends_a_tail(nats_url: str, prefix: str) -> None:
    backend = JetStreamEvents(nats_url, prefix=prefix, poll=0.05)
    tail = backend.tail("order.created")
    pending = asyncio.ensure_future(anext(tail))
    await backend.publish(envelope("order.created", 1))  # opens the streams; the tail may miss it
    await asyncio.wait({pending}, timeout=0.1)
    await backend.aclose()

    async def drain() -> None:  # whatever it saw before the close, it then ends
        nonlocal pending
        async with asyncio.timeout(WAIT):
            while True:
                await pending
                pending = asyncio.ensure_future(anext(tail))

    try:
        with pytest.raises(StopAsyncIteration):
            await drain()
    finally:
        await tail.aclose()


def number(envelope: Envelope) -> int:
    value: int = msgspec.msgpack.decode(envelope.payload)
    return value


async def test_a_subscription_takes_no_more_than_its_room_and_gives_back_the_rest(
    nats_url: str, prefix: str
) -> None:
    backend = JetStreamEvents(nats_url, prefix=prefix, poll=0.05)
    roomy = Subscription(topic="order.created", group="billing", instance="a", max_in_flight=4)
    other = Subscription(topic="order.created", group="billing", instance="b")
    try:
        await backend.declare(roomy)
        for n in range(10):
            await backend.publish(envelope("order.created", n))
        first = backend.subscribe(roomy)
        held = await anext(first)  # one round trip took 4: this one and 3 for its free slots
        assert number(held.envelope) == 0
        second = backend.subscribe(other)
        got: list[Envelope] = []
        async with asyncio.timeout(WAIT):
            while len(got) < 6:
                delivery = await anext(second)
                got.append(delivery.envelope)
                await delivery.ack()
        assert [number(e) for e in got] == [4, 5, 6, 7, 8, 9]  # nothing more was left
        await held.ack()
        await first.aclose()  # the 3 taken and not handed out go back at once...
        async with asyncio.timeout(WAIT):  # ...not after ack_wait (30 s)
            while len(got) < 9:
                delivery = await anext(second)
                got.append(delivery.envelope)
                await delivery.ack()
        assert [(number(e), e.attempt) for e in got[6:]] == [(1, 2), (2, 2), (3, 2)]
        await second.aclose()
    finally:
        await backend.aclose()


async def test_batch_caps_the_room_and_never_widens_it(nats_url: str, prefix: str) -> None:
    backend = JetStreamEvents(nats_url, prefix=prefix, poll=0.05, batch=8)
    narrow = Subscription(topic="order.created", group="billing", instance="a", max_in_flight=2)
    other = Subscription(topic="order.created", group="billing", instance="b")
    try:
        await backend.declare(narrow)
        for n in range(5):
            await backend.publish(envelope("order.created", n))
        first = backend.subscribe(narrow)
        held = await anext(first)  # took 2 (its room), not 8 (the batch)
        second = backend.subscribe(other)
        got: list[int] = []
        async with asyncio.timeout(WAIT):
            while len(got) < 3:
                delivery = await anext(second)
                got.append(number(delivery.envelope))
                await delivery.ack()
        assert got == [2, 3, 4]
        await held.ack()
        await first.aclose()
        await second.aclose()
    finally:
        await backend.aclose()


async def test_a_consumer_with_many_slots_keeps_each_keys_order(nats_url: str, prefix: str) -> None:
    backend = JetStreamEvents(nats_url, prefix=prefix, poll=0.05)
    seen: dict[str | None, list[int]] = {}
    count = 60

    async def handle(n: int, event: Envelope) -> None:
        await asyncio.sleep(0.001 * (n % 3))  # later events of other keys overtake
        seen.setdefault(event.key, []).append(n)

    subscription = Subscription(topic="order.created", group="billing", instance="i1")
    consumer = Consumer(backend, subscription, handle, payload_type=int,
                        policy=DeliveryPolicy(max_concurrent=16))  # fmt: skip
    assert consumer.subscription.max_in_flight == 16
    await consumer.start()
    try:
        for n in range(count):
            key = None if n % 4 == 3 else f"k{n % 4}"
            await backend.publish(envelope("order.created", n, key=key))
        await wait_for(lambda: sum(len(ns) for ns in seen.values()) == count, timeout=WAIT)
        for key in ("k0", "k1", "k2"):
            assert seen[key] == sorted(seen[key]), key
            assert len(seen[key]) == count // 4
        assert sorted(seen[None]) == list(range(3, count, 4))
    finally:
        await consumer.stop()
        await backend.aclose()

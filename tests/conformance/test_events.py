"""The suite every event backend passes: one behaviour, whatever the log.

Add a backend by adding one entry to :data:`BACKENDS`: an async factory (given
the test's ``tmp_path``), the delays its time-based tests use, for a backend
that needs a server that server (``tests/servers.py``; unreachable: skipped, or
failed when ``CI=true``), and whether two objects it makes share one store (then the
restart tests, which stand for another process, run on it too).  A server
keeps state between tests, so every test uses topics and groups of its own
(:func:`names`).

Waiting is by polling with deadlines: a :class:`Reader` asks its subscription
for one delivery at a time and never cancels a pending ask (cancelling would
close the iterator, which is what a crash looks like, and is tested as such).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.servers import NATS, Server, nats_prefix, require

from flotilla.errors import FlotillaError
from flotilla.events import Delivery, Envelope, EventBackend, Subscription, new_event_id
from flotilla.events.memory import MemoryEvents
from flotilla.headers import Headers

# The most any single wait may take before the test fails instead of hanging.
# Only a bound on a wait, never a promise: a busy machine (load 5-20 on 2
# cores) can stall a server and this process for seconds.  It is above the
# backends' own 5 s timeout, so a server that never answers shows as the
# backend's Unavailable rather than as a silent "no delivery", and below the
# 60 s ack_wait the give-back test relies on ("at once, not after ack_wait").
WAIT = 15.0


@dataclass(frozen=True)
class Timing:
    """The delays a backend's time-based tests use (servers get more slack)."""

    nak_delay: float
    ack_wait: float


@dataclass(frozen=True)
class Case:
    factory: Callable[[Path], Awaitable[EventBackend]]
    timing: Timing
    server: Server | None = None
    """The server the backend needs, checked before the factory runs."""
    shared: bool = False
    """Two objects made by the factory for one ``tmp_path`` see one store (another process's
    handle on the same log): the restart tests run on it."""


async def _memory(tmp_path: Path) -> EventBackend:
    return MemoryEvents()


async def _sqlite(tmp_path: Path) -> EventBackend:
    from flotilla.events.sqlite import SqliteEvents

    return SqliteEvents.from_url(f"sqlite:///{tmp_path}/events.db")


async def _nats(tmp_path: Path) -> EventBackend:
    from flotilla.events.jetstream import JetStreamEvents

    # Streams named after the test (its tmp_path): two handles share them,
    # and tests/conformance/conftest.py deletes them after the test.
    return JetStreamEvents(NATS.url, prefix=nats_prefix(tmp_path), poll=0.05)


# name -> how to make one, in one place: a new backend adds its entry here.
BACKENDS: dict[str, Case] = {
    # ack_wait: long enough that a busy machine's pause between a delivery and
    # its ack (or in_progress) does not pass for a crash and redeliver it.
    "memory": Case(_memory, Timing(nak_delay=0.05, ack_wait=0.5)),
    "sqlite": Case(_sqlite, Timing(nak_delay=0.05, ack_wait=0.6), shared=True),
    "nats": Case(
        _nats,
        Timing(nak_delay=0.2, ack_wait=1.0),  # nats-server 2.9 needs ack_wait >= 1 s
        server=NATS,
        shared=True,
    ),
}


@dataclass
class Setup:
    backend: EventBackend
    timing: Timing


@pytest.fixture(params=list(BACKENDS))
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    case = BACKENDS[request.param]
    if case.server is not None:
        require(case.server)
    backend = await case.factory(tmp_path)
    try:
        yield Setup(backend, case.timing)
    finally:
        await backend.aclose()


SHARED = [name for name, case in BACKENDS.items() if case.shared]


@pytest.fixture(params=SHARED)
async def two_handles(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Setup, Setup]]:
    """Two backend objects on one store, as two processes of one machine or cluster have."""
    case = BACKENDS[request.param]
    if case.server is not None:
        require(case.server)
    first = await case.factory(tmp_path)
    second = await case.factory(tmp_path)
    try:
        yield Setup(first, case.timing), Setup(second, case.timing)
    finally:
        await second.aclose()
        await first.aclose()


class Names:
    """Topics and groups unique to one test (a server backend outlives the test)."""

    def __init__(self) -> None:
        self.prefix = f"t{secrets.token_hex(4)}"

    def topic(self, name: str = "created") -> str:
        return f"{self.prefix}.{name}"

    def group(self, name: str = "g") -> str:
        return f"{self.prefix}-{name}"


@pytest.fixture
def names() -> Names:
    return Names()


def envelope(topic: str, n: int = 0, *, key: str | None = None) -> Envelope:
    return Envelope(
        id=new_event_id(),
        topic=topic,
        source="orders",
        instance="orders-1",
        time=time.time(),
        payload=msgspec.msgpack.encode({"n": n}),
        key=key,
        headers=Headers(request_id="r1", caller="front", trace="00-abc-def-01", meta={"a": "b"}),
    )


def number(delivery: Delivery) -> int:
    value: int = msgspec.msgpack.decode(delivery.envelope.payload)["n"]
    return value


class Reader:
    """One consumer: asks its subscription for one delivery at a time."""

    def __init__(self, backend: EventBackend, subscription: Subscription) -> None:
        self.iterator: Any = backend.subscribe(subscription)
        self.pending: asyncio.Task[Any] | None = None

    async def next(self, timeout: float = WAIT) -> Delivery:
        got = await self._poll(timeout)
        if got is None:
            raise AssertionError(f"no delivery within {timeout} s")
        return got

    async def nothing_for(self, seconds: float) -> None:
        got = await self._poll(seconds)
        assert got is None, f"unexpected delivery {got.envelope}"

    async def _poll(self, timeout: float) -> Delivery | None:
        if self.pending is None:
            self.pending = asyncio.ensure_future(anext(self.iterator))
        done, _ = await asyncio.wait({self.pending}, timeout=timeout)
        if not done:
            return None  # left pending: the next ask picks it up
        task, self.pending = self.pending, None
        result: Delivery = task.result()
        return result

    async def close(self) -> None:
        """Close the iterator, unacked deliveries and all: what a crashed consumer leaves."""
        if self.pending is not None:
            self.pending.cancel()
            await asyncio.gather(self.pending, return_exceptions=True)
            self.pending = None
        await self.iterator.aclose()


@pytest.fixture
async def readers() -> AsyncIterator[list[Reader]]:
    made: list[Reader] = []
    yield made
    for reader in made:
        await reader.close()


async def reader(
    setup: Setup,
    readers: list[Reader],
    topic: str,
    group: str,
    *,
    instance: str = "i1",
    broadcast: bool = False,
    max_in_flight: int = 1,
    ack_wait: float | None = None,
) -> Reader:
    """A declared subscription's reader (events published from now on reach it)."""
    subscription = Subscription(
        topic=topic,
        group=group,
        instance=instance,
        broadcast=broadcast,
        ack_wait=setup.timing.ack_wait if ack_wait is None else ack_wait,
        max_in_flight=max_in_flight,
    )
    await setup.backend.declare(subscription)
    made = Reader(setup.backend, subscription)
    readers.append(made)
    return made


async def test_publish_then_consume_and_ack(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    r = await reader(setup, readers, names.topic(), names.group())
    sent = envelope(names.topic(), 7, key="k1")
    await setup.backend.publish(sent)
    delivery = await r.next()
    assert delivery.envelope == sent  # every field kept, attempt 1
    await delivery.ack()
    await r.nothing_for(setup.timing.ack_wait * 2)  # acked: never again


async def test_nak_redelivers_after_the_delay_as_the_next_attempt(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    r = await reader(setup, readers, names.topic(), names.group())
    sent = envelope(names.topic())
    await setup.backend.publish(sent)
    first = await r.next()
    delay = setup.timing.nak_delay
    naked_at = time.monotonic()
    await first.nak(delay)
    second = await r.next()
    assert time.monotonic() - naked_at >= delay * 0.9
    assert second.envelope == msgspec.structs.replace(sent, attempt=2)
    await second.nak(delay)
    third = await r.next()
    assert third.envelope.attempt == 3
    await third.ack()


async def test_a_crashed_consumer_delivery_comes_back_after_ack_wait(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic, group = names.topic(), names.group()
    crashed = await reader(setup, readers, topic, group, instance="i1")
    await setup.backend.publish(envelope(topic, 1))
    taken = await crashed.next()
    taken_at = time.monotonic()
    await crashed.close()  # no ack, no nak: gone
    survivor = await reader(setup, readers, topic, group, instance="i2")
    again = await survivor.next()
    assert time.monotonic() - taken_at >= setup.timing.ack_wait * 0.9
    assert again.envelope.id == taken.envelope.id
    assert again.envelope.attempt == 2
    await again.ack()


async def test_in_progress_keeps_a_long_delivery_from_being_redelivered(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic, group = names.topic(), names.group()
    worker = await reader(setup, readers, topic, group, instance="i1")
    other = await reader(setup, readers, topic, group, instance="i2")
    await setup.backend.publish(envelope(topic))
    long_one = await worker.next()
    ack_wait = setup.timing.ack_wait
    for _ in range(8):  # twice ack_wait in all, renewed every quarter of it
        await long_one.in_progress()
        await other.nothing_for(ack_wait / 4)
    await long_one.ack()
    await other.nothing_for(ack_wait * 1.5)


async def test_a_group_gets_each_event_once_spread_over_its_consumers(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic, group = names.topic(), names.group()
    a = await reader(setup, readers, topic, group, instance="a")
    b = await reader(setup, readers, topic, group, instance="b")
    for n in range(4):
        await setup.backend.publish(envelope(topic, n))
    # a holds one unacked: the group's next event goes to b meanwhile.
    held = await a.next()
    other = await b.next()
    assert number(held) != number(other)
    seen = [number(held), number(other)]
    await held.ack()
    await other.ack()
    for _ in range(2):
        delivery = await a.next()
        seen.append(number(delivery))
        await delivery.ack()
    assert sorted(seen) == [0, 1, 2, 3]
    await a.nothing_for(setup.timing.ack_wait * 1.5)
    await b.nothing_for(0)


async def test_every_group_gets_every_event(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic = names.topic()
    billing = await reader(setup, readers, topic, names.group("billing"))
    shipping = await reader(setup, readers, topic, names.group("shipping"))
    for n in range(3):
        await setup.backend.publish(envelope(topic, n))
    for r in (billing, shipping):
        got = []
        for _ in range(3):
            delivery = await r.next()
            got.append(number(delivery))
            await delivery.ack()
        assert got == [0, 1, 2]


async def test_broadcast_reaches_every_instance(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic, group = names.topic(), names.group("cache")
    instances = [
        await reader(setup, readers, topic, group, instance=f"i{n}", broadcast=True)
        for n in range(3)
    ]
    balanced = await reader(setup, readers, topic, group, instance="i9")
    await setup.backend.publish(envelope(topic, 5))
    for r in instances:
        delivery = await r.next()
        assert number(delivery) == 5
        await delivery.ack()
    delivery = await balanced.next()  # the balanced group of the same name is apart
    await delivery.ack()
    for r in instances:
        await r.nothing_for(0.05)


async def test_per_key_order_holds_across_a_nak(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic = names.topic()
    r = await reader(setup, readers, topic, names.group())
    for n, key in enumerate(["k1", "k1", "k2", "k1"]):
        await setup.backend.publish(envelope(topic, n, key=key))
    first = await r.next()
    assert (number(first), first.envelope.key) == (0, "k1")
    # 0 is held: 1 and 3 (same key) wait; 2 (another key) goes.
    second = await r.next()
    assert number(second) == 2
    await first.nak(setup.timing.nak_delay)  # still ahead of 1 and 3
    again = await r.next()
    assert (number(again), again.envelope.attempt) == (0, 2)
    await r.nothing_for(setup.timing.nak_delay)  # 1 waits for 0's ack
    await again.ack()
    await second.ack()
    third = await r.next()
    assert number(third) == 1
    await third.ack()
    fourth = await r.next()
    assert number(fourth) == 3
    await fourth.ack()


async def test_keyless_events_are_delivered_concurrently(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic = names.topic()
    r = await reader(setup, readers, topic, names.group())
    for n in range(3):
        await setup.backend.publish(envelope(topic, n))
    held = [await r.next() for _ in range(3)]  # none acked yet
    assert sorted(number(d) for d in held) == [0, 1, 2]
    for delivery in held:
        await delivery.ack()


async def test_dead_letters_keep_the_error_and_replay_to_that_group_only(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic = names.topic()
    gave_up = await reader(setup, readers, topic, names.group("fragile"))
    fine = await reader(setup, readers, topic, names.group("fine"))
    sent = envelope(topic, 1)
    await setup.backend.publish(sent)
    await (await fine.next()).ack()
    delivery = await gave_up.next()
    await delivery.dead_letter("ValueError: no such product")
    [dead] = await setup.backend.dead_letters(topic=topic)
    assert dead.envelope.id == sent.id
    assert dead.group == names.group("fragile")
    assert dead.error == "ValueError: no such product"
    await gave_up.nothing_for(setup.timing.ack_wait * 1.5)  # dead: not redelivered

    assert await setup.backend.replay([sent.id]) == 1
    back = await gave_up.next()
    assert back.envelope.id == sent.id
    assert back.envelope.payload == sent.payload
    assert await setup.backend.dead_letters(topic=topic) == []
    await back.ack()
    await fine.nothing_for(0.05)
    assert await setup.backend.replay([new_event_id()]) == 0


async def test_replay_all(setup: Setup, names: Names, readers: list[Reader]) -> None:
    topic = names.topic()
    r = await reader(setup, readers, topic, names.group())
    for n in range(2):
        await setup.backend.publish(envelope(topic, n))
    for _ in range(2):
        await (await r.next()).dead_letter("boom")
    dead = await setup.backend.dead_letters(topic=topic)
    assert [msgspec.msgpack.decode(d.envelope.payload)["n"] for d in dead] == [0, 1]
    assert await setup.backend.replay() >= 2  # a server may hold other tests' dead letters
    got = sorted([number(await r.next()), number(await r.next())])
    assert got == [0, 1]


async def test_tail_shows_events_as_they_are_published(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic = names.topic()
    group = await reader(setup, readers, topic, names.group())
    tail: Any = setup.backend.tail(topic)
    first = asyncio.ensure_future(anext(tail))
    # The tail starts listening at some point after the first ask: publish
    # until it has seen one, then check it sees the rest, in order.
    published: list[Envelope] = []
    try:
        async with asyncio.timeout(WAIT):
            while not first.done():
                published.append(envelope(topic, len(published)))
                await setup.backend.publish(published[-1])
                await asyncio.wait({first}, timeout=0.02)
            seen = [first.result()]
            for _ in range(3):
                published.append(envelope(topic, len(published)))
                await setup.backend.publish(published[-1])
            while len(seen) < len(published) - published.index(seen[0]):
                seen.append(await anext(tail))
    finally:
        first.cancel()
        await tail.aclose()
    start = published.index(seen[0])
    assert seen == published[start:]
    # A tail takes nothing from the groups.
    for sent in published:
        delivery = await group.next()
        assert delivery.envelope.id == sent.id
        await delivery.ack()


async def test_topics_lists_every_topic_that_saw_an_event(setup: Setup, names: Names) -> None:
    for name in ("a", "b"):
        await setup.backend.publish(envelope(names.topic(name)))
    topics = await setup.backend.topics()
    assert {names.topic("a"), names.topic("b")} <= set(topics)
    assert names.topic("never") not in topics


async def test_a_group_keeps_its_place_across_resubscribe(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic, group = names.topic(), names.group()
    await setup.backend.publish(envelope(topic, 0))  # before the group: never delivered
    first = await reader(setup, readers, topic, group)
    await setup.backend.publish(envelope(topic, 1))
    delivery = await first.next()
    assert number(delivery) == 1
    await delivery.ack()
    await first.close()
    readers.remove(first)
    for n in (2, 3):  # while nobody is subscribed
        await setup.backend.publish(envelope(topic, n))
    again = await reader(setup, readers, topic, group)
    for n in (2, 3):
        delivery = await again.next()
        assert number(delivery) == n
        await delivery.ack()
    await again.nothing_for(setup.timing.ack_wait * 1.5)


async def test_a_closed_backend_refuses_to_publish_and_ends_subscriptions(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    r = await reader(setup, readers, names.topic(), names.group())
    waiting = asyncio.ensure_future(anext(r.iterator))
    await asyncio.wait({waiting}, timeout=0.05)  # let it start waiting
    await setup.backend.aclose()
    # Ended, or (closed before it even started) refused: never left hanging.
    with pytest.raises((StopAsyncIteration, FlotillaError)):
        async with asyncio.timeout(WAIT):
            await waiting
    with pytest.raises(FlotillaError):
        await setup.backend.publish(envelope(names.topic()))
    await setup.backend.aclose()  # idempotent


async def test_per_key_order_holds_with_two_consumers_and_naks(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic, group = names.topic(), names.group()
    pair = [await reader(setup, readers, topic, group, instance=f"i{n}") for n in range(2)]
    keys = ["a", "b", "c"]
    for n in range(18):
        await setup.backend.publish(envelope(topic, n, key=keys[n % 3]))
    acked: list[int] = []

    async def consume(r: Reader) -> None:
        while len(acked) < 18:
            try:
                delivery = await r.next(timeout=0.05)
            except AssertionError:
                continue  # nothing for this one now; the other may hold the keys
            n = number(delivery)
            if n % 4 == 0 and delivery.envelope.attempt == 1:
                await delivery.nak(setup.timing.nak_delay)  # comes back, still first of its key
            else:
                acked.append(n)
                await delivery.ack()

    async with asyncio.timeout(WAIT * 2):
        await asyncio.gather(*(consume(r) for r in pair))
    assert sorted(acked) == list(range(18))  # each once
    for k in range(3):
        of_key = [n for n in acked if n % 3 == k]
        assert of_key == sorted(of_key), f"key {keys[k]} out of order: {of_key}"


async def test_a_subscription_takes_no_more_than_its_room_and_gives_back_the_rest_on_close(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic, group = names.topic(), names.group()
    # ack_wait far beyond the test: what comes back, comes back because it was given back.
    roomy = await reader(setup, readers, topic, group, instance="a", max_in_flight=3, ack_wait=60)
    other = await reader(setup, readers, topic, group, instance="b", ack_wait=60)
    for n in range(5):
        await setup.backend.publish(envelope(topic, n))
    held = await roomy.next()  # its one ask may have taken 3: no more
    seen = [number(held)]
    while len(seen) < 3:  # so at least 2 are left to the group's other consumer
        delivery = await other.next()
        seen.append(number(delivery))
        await delivery.ack()
    await held.ack()
    await roomy.close()  # what it took and did not hand out goes back to the group...
    while len(seen) < 5:  # ...at once, not after ack_wait
        delivery = await other.next()
        seen.append(number(delivery))
        await delivery.ack()
    assert sorted(seen) == [0, 1, 2, 3, 4]
    await other.nothing_for(0.05)


async def test_per_key_order_holds_with_room_for_several(
    setup: Setup, names: Names, readers: list[Reader]
) -> None:
    topic = names.topic()
    r = await reader(setup, readers, topic, names.group(), max_in_flight=4)
    keys = ["a", "b", None]
    for n in range(12):
        await setup.backend.publish(envelope(topic, n, key=keys[n % 3]))
    acked: list[int] = []
    async with asyncio.timeout(WAIT * 2):
        while len(acked) < 12:
            held = []
            while len(held) < 4:  # as a consumer with 4 slots: take while there is any
                try:
                    held.append(await r.next(timeout=0.05))
                except AssertionError:
                    break
            # Ended last first: a second event of a key held with the first would be
            # acked before it.  A first attempt of n % 4 == 0 is naked: still first of its key.
            for delivery in reversed(held):
                n = number(delivery)
                if n % 4 == 0 and delivery.envelope.attempt == 1:
                    await delivery.nak(0)
                else:
                    acked.append(n)
                    await delivery.ack()
    assert sorted(acked) == list(range(12))  # each once
    for k in ("a", "b"):
        of_key = [n for n in acked if keys[n % 3] == k]
        assert of_key == sorted(of_key), f"key {k} out of order: {of_key}"


async def test_another_handle_gets_what_a_crashed_process_left_and_keeps_the_place(
    two_handles: tuple[Setup, Setup], names: Names, readers: list[Reader]
) -> None:
    crashing, surviving = two_handles
    topic, group = names.topic(), names.group()
    doomed = await reader(crashing, readers, topic, group, instance="p1")
    await surviving.backend.publish(envelope(topic, 1))  # published through the other handle
    taken = await doomed.next()
    await doomed.close()
    readers.remove(doomed)
    await crashing.backend.aclose()  # the process is gone, its delivery unacked
    heir = await reader(surviving, readers, topic, group, instance="p2")
    again = await heir.next()
    assert (again.envelope.id, again.envelope.attempt) == (taken.envelope.id, 2)
    await again.ack()
    await surviving.backend.publish(envelope(topic, 2))
    assert number(await heir.next()) == 2

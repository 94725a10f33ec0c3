"""The memory backend's timers run on the injected clock: exact under a fake one.

Everything else it does is checked by the conformance suite
(``tests/conformance/test_events.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flotilla.errors import ConfigError, Unavailable
from flotilla.events import EVENT_BACKENDS, Envelope, Subscription, new_event_id
from flotilla.events.memory import MemoryEvents
from flotilla.testing.clock import FakeClock


def event(topic: str = "t", key: str | None = None) -> Envelope:
    return Envelope(
        id=new_event_id(), topic=topic, source="", instance="", time=0.0, payload=b"\xc0", key=key
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backend(clock: FakeClock) -> AsyncIterator[MemoryEvents]:
    events = MemoryEvents(clock)
    yield events
    await events.aclose()


async def subscribed(backend: MemoryEvents, sub: Subscription) -> Any:
    await backend.declare(sub)
    return backend.subscribe(sub)


async def taken(source: Any) -> Any:
    """The next delivery of an iterator (or a pending ``anext``), due without time passing."""
    async with asyncio.timeout(1):
        return await (source if isinstance(source, asyncio.Future) else anext(source))


async def pending(iterator: Any) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(anext(iterator))
    await asyncio.sleep(0)  # let it start waiting
    return task


def test_the_url_takes_no_path() -> None:
    assert isinstance(EVENT_BACKENDS.open("memory://"), MemoryEvents)
    with pytest.raises(ConfigError, match="memory:// takes no path"):
        MemoryEvents.from_url("memory://somewhere")


async def test_a_nak_delay_passes_on_the_clock_exactly(
    backend: MemoryEvents, clock: FakeClock
) -> None:
    sub = Subscription(topic="t", group="g", instance="i")
    deliveries = await subscribed(backend, sub)
    await backend.publish(event())
    first = await taken(deliveries)
    await first.nak(2.0)
    waiting = await pending(deliveries)
    # Steps that add up exactly in binary floating point: 1.75 + 0.25 == 2.
    await clock.advance(1.75)
    assert not waiting.done()
    await clock.advance(0.25)
    second = await taken(waiting)
    assert second.envelope.attempt == 2
    await deliveries.aclose()


async def test_ack_wait_passes_on_the_clock_exactly(
    backend: MemoryEvents, clock: FakeClock
) -> None:
    sub = Subscription(topic="t", group="g", instance="i", ack_wait=10)
    deliveries = await subscribed(backend, sub)
    await backend.publish(event())
    first = await taken(deliveries)
    waiting = await pending(deliveries)
    await clock.advance(5)
    await first.in_progress()  # renewed at 5: due at 15
    await clock.advance(9.75)
    assert not waiting.done()
    await clock.advance(0.25)
    second = await taken(waiting)
    assert second.envelope.attempt == 2
    await first.nak(0)  # the first delivery lost its hold: ignored
    await first.dead_letter("late")
    assert await backend.dead_letters() == []
    await second.ack()
    await deliveries.aclose()


async def test_broadcast_dead_letters_name_the_instance_and_replay_there(
    backend: MemoryEvents,
) -> None:
    sub = Subscription(topic="t", group="cache", instance="cache-1", broadcast=True)
    deliveries = await subscribed(backend, sub)
    await backend.publish(event())
    await (await taken(deliveries)).dead_letter("boom")
    [dead] = await backend.dead_letters()
    assert dead.group == "cache@cache-1"
    assert await backend.replay() == 1
    again = await taken(deliveries)
    assert again.envelope.attempt == 1  # a replay starts the count again
    await deliveries.aclose()


async def test_dead_letters_are_limited_and_filtered(backend: MemoryEvents) -> None:
    deliveries = await subscribed(backend, Subscription(topic="t", group="g", instance="i"))
    await backend.declare(Subscription(topic="u", group="g", instance="i"))
    for _ in range(3):
        await backend.publish(event())
        await (await taken(deliveries)).dead_letter("x")
    assert len(await backend.dead_letters(limit=2)) == 2
    assert await backend.dead_letters(topic="u") == []
    await deliveries.aclose()


async def test_a_closed_backend_refuses_every_call(backend: MemoryEvents) -> None:
    await backend.aclose()
    with pytest.raises(Unavailable, match="closed"):
        await backend.topics()
    subscription = Subscription(topic="t", group="g", instance="i")
    with pytest.raises(Unavailable):
        await backend.declare(subscription)
    with pytest.raises(StopAsyncIteration):  # ended, not failed: a consumer stops asking
        await anext(backend.subscribe(subscription))

"""The emitter: one envelope per emit, the payload encoded once, headers without the deadline."""

from __future__ import annotations

import msgspec
import pytest

from flotilla.errors import InvalidArgument
from flotilla.events import EventBackend
from flotilla.events.emitter import Emitter
from flotilla.events.memory import MemoryEvents
from flotilla.headers import Headers
from flotilla.testing.clock import FakeClock


class Order(msgspec.Struct):
    id: int


def emitter(backend: MemoryEvents) -> Emitter:
    async def get() -> EventBackend:
        return backend

    return Emitter(get, instances={"orders": "orders-1a2b"}, clock=FakeClock(start=1234.5))


async def test_an_emit_publishes_one_envelope() -> None:
    backend = MemoryEvents()
    headers = Headers(request_id="r1", caller="front", deadline=99.0, trace="t", meta={"a": "b"})
    envelope = await emitter(backend).emit(
        "order.created", Order(7), key="7", headers=headers, source="orders"
    )
    assert envelope.topic == "order.created"
    assert (envelope.source, envelope.instance) == ("orders", "orders-1a2b")
    assert envelope.time == 1234.5
    assert envelope.key == "7"
    assert msgspec.msgpack.decode(envelope.payload, type=Order) == Order(7)
    assert envelope.headers == headers.replace(deadline=None)
    assert envelope.attempt == 1
    assert await backend.topics() == ["order.created"]
    await backend.aclose()


@pytest.mark.parametrize(
    ("topic", "payload", "key", "message"),
    [
        ("t", object(), None, "cannot be encoded"),
        ("", 1, None, "is not a dotted name"),
        # What the transaction's outbox refuses, a direct emit refuses too: one rule.
        ("order created", 1, None, "is not a dotted name"),
        ("t" * 256, 1, None, "is not a dotted name"),
        ("t", 1, 7, "must be a string"),
        ("t", 1, "k" * 256, "at most 255"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_published(
    topic: str, payload: object, key: object, message: str
) -> None:
    backend = MemoryEvents()
    emit = emitter(backend).emit
    with pytest.raises(InvalidArgument, match=message):
        await emit(topic, payload, key=key, headers=Headers(), source="")  # type: ignore[arg-type]
    assert await backend.topics() == []
    await backend.aclose()

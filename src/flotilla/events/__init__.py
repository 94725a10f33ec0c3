"""Durable events: at-least-once pub/sub with consumer groups and dead letters.

Backends are named by URL::

    memory://                      this process only (tests, flotilla.testing)
    sqlite:///abs/path/events.db   an embedded log shared by every process on a machine
    nats://127.0.0.1:4222          NATS JetStream (the ``nats`` extra; see events/jetstream.py)
"""

from __future__ import annotations

from flotilla.events.backend import AlreadyHandled, Delivery, EventBackend, Subscription
from flotilla.events.envelope import DeadLetter, Envelope, new_event_id
from flotilla.resolve import BackendFamily

__all__ = [
    "EVENT_BACKENDS",
    "AlreadyHandled",
    "DeadLetter",
    "Delivery",
    "Envelope",
    "EventBackend",
    "Subscription",
    "new_event_id",
]

EVENT_BACKENDS: BackendFamily[EventBackend] = BackendFamily(
    "events",
    {
        "memory": "flotilla.events.memory:MemoryEvents.from_url",
        "sqlite": "flotilla.events.sqlite:SqliteEvents.from_url",
        "nats": "flotilla.events.jetstream:JetStreamEvents.from_url",
    },
    extras={"nats": "nats"},
)

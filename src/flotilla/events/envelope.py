"""The envelope: one event as every backend stores and delivers it.

An event is published once and may be delivered many times (at-least-once);
everything that identifies it is fixed when it is emitted, and only
``attempt`` changes from one delivery to the next.
"""

from __future__ import annotations

import os
import re
import time

import msgspec

from flotilla.errors import InvalidArgument
from flotilla.headers import Headers

__all__ = ["KEY_MAX", "DeadLetter", "Envelope", "check_topic_and_key", "new_event_id"]

_TOPIC = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}$")
KEY_MAX = 255
"""The longest key an event may have (the outbox's column is this wide)."""


def new_event_id() -> str:
    """A unique, roughly time-ordered event id (32 hex digits: 48-bit ms time + 80 random bits)."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def check_topic_and_key(topic: object, key: object) -> None:
    """Refuse (``InvalidArgument``) a topic that is not a dotted name, or a key that is
    not a string of at most :data:`KEY_MAX` characters.

    One rule for every way of emitting (``ctx.emit``, ``node.emit``, ``tx.emit``):
    what one path takes, the other does not refuse.
    """
    if not isinstance(topic, str) or not _TOPIC.match(topic):
        raise InvalidArgument(
            f"event topic {topic!r} is not a dotted name (letters, digits, '_', '-', '.', ':';"
            " at most 255)"
        )
    if key is not None and (not isinstance(key, str) or len(key) > KEY_MAX):
        raise InvalidArgument(
            f"event key of {topic!r} must be a string of at most {KEY_MAX} chars, got {key!r:.40}"
        )


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One event: its identity, where it came from, and its encoded payload."""

    id: str
    """Unique per event (:func:`new_event_id`); the inbox deduplicates on it."""
    topic: str
    """Dotted name, ``"order.created"``."""
    source: str
    """The emitting service ('' from outside any service)."""
    instance: str
    """The emitting instance id ('' from outside any node)."""
    time: float
    """When it was emitted, Unix seconds (wall clock: it is shown to people)."""
    payload: bytes
    """The payload, msgpack-encoded once by the emitter."""
    key: str | None = None
    """Events of one key are handled in order within a group; None: no order kept."""
    headers: Headers = Headers()
    """The emitting call's headers (request id, trace context, principal); no deadline."""
    attempt: int = 1
    """Which delivery this is (1 = the first); set by the backend on delivery."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """An event a group gave up on, kept until replayed or purged."""

    envelope: Envelope
    group: str
    """The consumer group that could not handle it (replay re-delivers to this group only)."""
    error: str
    """The last handler error, or the validation error for a payload of the wrong type."""
    time: float
    """When it was dead-lettered, Unix seconds."""

"""One JetStream message as a :class:`~flotilla.events.backend.Delivery`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
from nats.aio.msg import Msg

from flotilla.events.envelope import DeadLetter, Envelope
from flotilla.nats_link import nats_errors_as_unavailable

if TYPE_CHECKING:
    from flotilla.events.jetstream import JetStreamEvents

__all__ = ["JetStreamDelivery", "decode_envelope"]

log = logging.getLogger("flotilla.events")

_decode = msgspec.msgpack.Decoder(Envelope).decode


def decode_envelope(data: bytes) -> Envelope | None:
    """The envelope in a message, or None (logged) for a message that holds none."""
    try:
        return _decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("a message in the event stream is not an event, left out: %s", exc)
        return None


class JetStreamDelivery:
    """One delivery; ``attempt`` is JetStream's delivery count of the message."""

    def __init__(
        self,
        msg: Msg,
        envelope: Envelope,
        *,
        group: str,
        backend: JetStreamEvents,
        ended: Callable[[], None],
    ) -> None:
        self._msg = msg
        self._ended = ended
        self._done = False
        self._envelope = msgspec.structs.replace(envelope, attempt=msg.metadata.num_delivered)
        self._group = group
        self._backend = backend

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    # Each of the three ends the delivery for the subscription even when it
    # fails: the subscriber is done with it, and the server hands it out again
    # after ``ack_wait``.

    async def ack(self) -> None:
        try:
            with nats_errors_as_unavailable("acking an event"):
                await self._msg.ack()
        finally:
            self._end()

    async def nak(self, delay: float) -> None:
        try:
            with nats_errors_as_unavailable("naking an event"):
                await self._msg.nak(delay=delay if delay > 0 else None)
        finally:
            self._end()

    async def in_progress(self) -> None:
        with nats_errors_as_unavailable("extending an event's ack wait"):
            await self._msg.in_progress()

    async def dead_letter(self, error: str) -> None:
        # Stored first, terminated after: a crash between the two redelivers the
        # event (a second dead letter at worst), never loses it.
        dead = DeadLetter(envelope=self._envelope, group=self._group, error=error, time=time.time())
        try:
            await self._backend.store_dead_letter(dead)
            with nats_errors_as_unavailable("terminating a dead-lettered event"):
                await self._msg.term()
        finally:
            self._end()

    def _end(self) -> None:
        """Tell the subscription this delivery no longer holds its consumer (once)."""
        if not self._done:
            self._done = True
            self._ended()

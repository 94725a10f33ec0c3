"""Publishing straight to the backend: what ``ctx.emit`` and ``node.emit`` do.

The payload is encoded once, here; the envelope carries the emitting call's
headers without the deadline (an event outlives the call that emitted it).
This path is at-least-once only from the moment ``publish`` returns: if the
process dies before, or the backend is unreachable (the emit raises), the
event is not published.  An emit that must happen together with a database
change goes through the transaction's outbox (``tx.emit``) instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from flotilla import codec
from flotilla.clock import Clock, SystemClock
from flotilla.errors import InvalidArgument
from flotilla.events.backend import EventBackend
from flotilla.events.envelope import Envelope, check_topic_and_key, new_event_id
from flotilla.headers import Headers

__all__ = ["Emitter"]


class Emitter:
    """Makes envelopes and publishes them; ``instances`` names the emitting instance per service."""

    def __init__(
        self,
        backend: Callable[[], Awaitable[EventBackend]],
        *,
        instances: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._backend = backend
        self._instances = instances or {}
        self._clock = clock or SystemClock()

    def envelope(
        self, topic: str, payload: Any, *, key: str | None, headers: Headers, source: str
    ) -> Envelope:
        """The envelope of a new event (checked and encoded, not yet published)."""
        check_topic_and_key(topic, key)
        try:
            encoded = codec.encode(payload)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise InvalidArgument(f"the payload of {topic!r} cannot be encoded: {exc}") from None
        return Envelope(
            id=new_event_id(),
            topic=topic,
            source=source,
            instance=self._instances.get(source, ""),
            time=self._clock.time(),
            payload=encoded,
            key=key,
            headers=headers.replace(deadline=None) if headers.deadline is not None else headers,
        )

    async def emit(
        self, topic: str, payload: Any, *, key: str | None, headers: Headers, source: str
    ) -> Envelope:
        """Publish a new event now; returns it once the backend has it."""
        envelope = self.envelope(topic, payload, key=key, headers=headers, source=source)
        backend = await self._backend()
        await backend.publish(envelope)
        return envelope

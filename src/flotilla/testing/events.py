"""The events side of the test kit: see what was emitted, wait for it to be handled.

Every node of a :class:`~flotilla.testing.Cluster` shares one memory backend
(``cluster.events``), read on the cluster's clock: with a
:class:`~flotilla.testing.FakeClock`, a nak'd event comes back when the test
advances the clock past its backoff, and not before::

    async with Cluster(clock=FakeClock()) as cluster:
        await cluster.add(Billing())
        await cluster.events.publish("order.placed", OrderPlaced(id=1))
        [outcome] = await cluster.events.wait_handled("order.placed")
        assert outcome.handler == "billing.charge"
        assert cluster.events.payloads("invoice.sent", Invoice) == [Invoice(order=1)]
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from flotilla import codec
from flotilla.clock import Clock
from flotilla.events.consumer import Outcome
from flotilla.events.emitter import Emitter
from flotilla.events.envelope import DeadLetter, Envelope
from flotilla.events.memory import MemoryEvents
from flotilla.headers import Headers

__all__ = ["EventsKit", "RecordingEvents"]

T = TypeVar("T")

_HANDLED = ("acked", "already_handled")


class RecordingEvents(MemoryEvents):
    """A memory backend that remembers every envelope published to it, in order."""

    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.published: list[Envelope] = []

    async def publish(self, envelope: Envelope) -> None:
        await super().publish(envelope)
        self.published.append(envelope)


class EventsKit:
    """What a test sees of the cluster's events (``cluster.events``)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.backend = RecordingEvents(clock)
        self.outcomes: list[Outcome] = []
        """How every delivery to every handler ended, in order."""
        self._changed = asyncio.Event()
        self._emitter = Emitter(self._get_backend, clock=clock)

    async def _get_backend(self) -> RecordingEvents:
        return self.backend

    def record(self, outcome: Outcome) -> None:
        """The nodes' consumers report here (the cluster wires it)."""
        self.outcomes.append(outcome)
        self._changed.set()
        self._changed = asyncio.Event()

    def emitted(self, topic: str | None = None) -> list[Envelope]:
        """The envelopes published (to ``topic``), oldest first."""
        return [e for e in self.backend.published if topic is None or e.topic == topic]

    def payloads(self, topic: str, type: type[T] | Any = Any) -> list[T]:
        """The payloads published to ``topic``, decoded into ``type``."""
        return [codec.decode(e.payload, type) for e in self.emitted(topic)]

    async def publish(self, topic: str, payload: Any, *, key: str | None = None) -> str:
        """Publish an event as from outside the system; returns its id."""
        envelope = await self._emitter.emit(topic, payload, key=key, headers=Headers(), source="")
        return envelope.id

    def handled(self, topic: str | None = None) -> list[Outcome]:
        """The deliveries (of ``topic``) that a handler finished (acked or already handled)."""
        return self._matching(topic, _HANDLED)

    async def wait_handled(
        self, topic: str, *, count: int = 1, timeout: float = 5.0
    ) -> list[Outcome]:
        """Wait until ``count`` deliveries of ``topic`` were handled; they say by whom.

        ``TimeoutError`` after ``timeout`` real seconds, naming what did happen.
        """
        return await self._wait(topic, _HANDLED, count, timeout)

    async def wait_dead_lettered(
        self, topic: str, *, count: int = 1, timeout: float = 5.0
    ) -> list[Outcome]:
        """Wait until ``count`` events of ``topic`` were dead-lettered (a bad payload included)."""
        return await self._wait(topic, ("dead_lettered", "invalid_payload"), count, timeout)

    async def wait_retried(
        self, topic: str, *, count: int = 1, timeout: float = 5.0
    ) -> list[Outcome]:
        """Wait until handlers failed ``count`` times on ``topic`` and asked for it again."""
        return await self._wait(topic, ("retried",), count, timeout)

    async def dead_letters(self, topic: str | None = None) -> list[DeadLetter]:
        """The dead letters kept (of ``topic``)."""
        return await self.backend.dead_letters(topic=topic, limit=1_000_000)

    def _matching(self, topic: str | None, results: tuple[str, ...]) -> list[Outcome]:
        return [
            o
            for o in self.outcomes
            if o.result in results and (topic is None or o.envelope.topic == topic)
        ]

    async def _wait(
        self, topic: str, results: tuple[str, ...], count: int, timeout: float
    ) -> list[Outcome]:
        found: Callable[[], list[Outcome]] = lambda: self._matching(topic, results)  # noqa: E731
        try:
            async with asyncio.timeout(timeout):
                while len(found()) < count:
                    await self._changed.wait()
        except TimeoutError:
            seen = [
                (o.handler, o.result, o.error) for o in self.outcomes if o.envelope.topic == topic
            ]
            raise TimeoutError(
                f"{len(found())} of {count} {'/'.join(results)} deliveries of {topic!r} "
                f"within {timeout} s; outcomes of that topic: {seen or 'none'}"
            ) from None
        return found()[:count]

    async def aclose(self) -> None:
        await self.backend.aclose()

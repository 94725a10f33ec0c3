"""What an event backend is: a durable log with consumer groups and a dead-letter store.

Every backend (``memory://``, the embedded SQLite log, NATS JetStream) passes
the one conformance suite (``tests/conformance/test_events.py``).  The
*backend* stores, delivers and redelivers; the *consumer* in
:mod:`flotilla.events.consumer` decides, per delivery, to ack it, to ask for it
again later, or to dead-letter it.

Semantics every backend keeps:

* :meth:`EventBackend.publish` returns once the event is durable (as durable as
  the backend: memory is not); an event is never lost after that.
* A :class:`Subscription` with ``broadcast=False`` shares the topic's events
  among every consumer of its ``group`` (each event goes to one of them);
  with ``broadcast=True`` each subscribing instance gets every event.
* A delivery not acked within ``ack_wait`` (its consumer crashed) is delivered
  again, with ``attempt`` one higher.
* Within a group, events of one ``key`` are delivered in publish order, and
  the next one of a key is not delivered before the previous one is acked or
  dead-lettered.
* A subscription made after events were published still gets those
  published after the group was first created (a durable group keeps its
  place across restarts); a new group starts at the end of the log.  A group
  is created by :meth:`EventBackend.declare` (which :meth:`EventBackend.subscribe`
  does too): a consumer declares before it reports itself started, so no event
  published after that is missed.
* A broadcast subscription is a group of its own per ``(group, instance)``;
  its dead letters name it ``"<group>@<instance>"``.
* Replay puts a dead letter back at the end of its group's queue, as attempt 1.
* A subscription takes no more than its subscriber has room for
  (:attr:`Subscription.max_in_flight` less the deliveries it holds), so
  nothing is held that the subscriber could not run now.  The room is data
  the backend counts itself, not a callback into the consumer: it is the same
  number in-process and over the wire, and a slot counts as free when its
  delivery ends (ack, nak, dead-letter), the moment the backend could hand
  out the next event of that key anyway.

A backend is made from its URL by ``factory(url, *, clock=None)`` (see
:data:`flotilla.events.EVENT_BACKENDS`); a backend whose timers run in a
server ignores the clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import msgspec

from flotilla.errors import AlreadyExists
from flotilla.events.envelope import DeadLetter, Envelope

__all__ = [
    "AlreadyHandled",
    "Delivery",
    "EventBackend",
    "Publisher",
    "Subscription",
]


class AlreadyHandled(AlreadyExists):
    """Raised (by the inbox) when a delivery's event was already handled by this group.

    The consumer treats it as success and acks the delivery: a redelivered
    event has no second effect.  It belongs to the one error tree (the event's
    inbox record already exists), so an RPC method that lets it escape answers
    ``already_exists``, not ``internal``.
    """


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """Who consumes which topic, and how."""

    topic: str
    group: str
    """Durable consumer group; defaults to the service name at the ``@on_event`` level."""
    instance: str
    """The consuming instance (a broadcast subscription is per instance)."""
    broadcast: bool = False
    ack_wait: float = 30.0
    """Seconds a delivery may stay unacked before it is delivered again."""
    max_in_flight: int = 1
    """Deliveries the subscriber runs at once: at an ask, a backend may take (in one
    go) up to this less the deliveries it handed out and not yet ended, never more."""


class Delivery(Protocol):
    """One delivery of one event to one consumer; exactly one of the three ends it."""

    @property
    def envelope(self) -> Envelope:
        """The event, with ``attempt`` set to this delivery's number."""
        ...

    async def ack(self) -> None:
        """Handled: never deliver it to this group (or instance, if broadcast) again."""
        ...

    async def nak(self, delay: float) -> None:
        """Not handled: deliver it again after ``delay`` seconds, as attempt + 1."""
        ...

    async def dead_letter(self, error: str) -> None:
        """Give up: keep it in the dead-letter store with ``error``, and move on."""
        ...

    async def in_progress(self) -> None:
        """Still working on it: restart the ``ack_wait`` clock."""
        ...


class Publisher(Protocol):
    """What an outbox relay needs: somewhere to publish (a backend, or a node's events part)."""

    async def publish(self, envelope: Envelope) -> None:
        """Store ``envelope`` durably; raises ``Unavailable`` if that cannot be done now."""
        ...


class EventBackend(Protocol):
    """A durable event log (see the module docstring for the semantics)."""

    async def declare(self, subscription: Subscription) -> None:
        """Create the subscription's group if it does not exist yet, at the end of the log.

        Idempotent; an existing group keeps its place (its ``ack_wait`` may change).
        """
        ...

    async def publish(self, envelope: Envelope) -> None:
        """Store ``envelope`` durably; raises ``Unavailable`` if the backend cannot be reached."""
        ...

    def subscribe(self, subscription: Subscription) -> AsyncIterator[Delivery]:
        """Deliveries for ``subscription``, until the iterator is closed or the backend is.

        The iterator takes deliveries only when asked for the next one, and no
        more than the subscriber has room for: ``max_in_flight`` less the
        deliveries it handed out whose ack, nak or dead-letter has not come
        yet (at least one; ``max_in_flight`` is 1 by default: no prefetch).
        It may take several in one go (one round trip or claim), handing them
        out on this ask and the next ones, but no more than one of a key: the
        next of a key is taken only once the previous one is ended.  A
        consumer that stops asking leaves the rest to the other consumers of
        its group.  Closing the iterator gives back what it took and did not
        hand out (at once, or after ``ack_wait``), and leaves its unacked
        deliveries to ``ack_wait``, as a crash would.  Whether an event given
        back counts as a delivery is the backend's: the embedded log does not
        count it; JetStream counts every delivery it made, so there the next
        ``attempt`` is one higher (a subscription closed that often, without
        handling the event, brings it nearer ``max_deliveries``).
        """
        ...

    def tail(self, topic: str) -> AsyncIterator[Envelope]:
        """Events of ``topic`` as they are published from now on (no group, no acks)."""
        ...

    async def dead_letters(self, *, topic: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The dead letters, oldest first, optionally of one topic."""
        ...

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Deliver dead letters again to the group that gave up on them (``None``: all).

        Replayed events leave the dead-letter store; returns how many.
        """
        ...

    async def topics(self) -> list[str]:
        """Every topic that has seen an event (for ``flotilla events`` to check names)."""
        ...

    async def aclose(self) -> None:
        """Close the connection or file; idempotent."""
        ...

"""The in-process event backend (``memory://``): every semantic of the log, in dicts.

Each group keeps a queue of the events it has not finished, in publish order;
an event leaves the queue when acked or dead-lettered.  A consumer asking for
the next delivery takes the first event of the queue that is

* not held by another delivery (or held past its ``ack_wait``: that consumer
  is taken for dead, and the event goes out again as attempt + 1),
* not waiting out a nak's delay,
* the first of its key still in the queue (per-key order: a later event of a
  key waits until every earlier one is acked or dead-lettered).

It takes one event per ask, however much room the subscription has
(``max_in_flight``): there is no round trip to save.

One item's life in a group's queue::

    queued --take--> held --ack / dead_letter--> (gone)
      ^                |
      |                +--nak(delay)--> waiting --delay passed--> queued
      +----ack_wait passed (held too long)-----------------------+

Time is read from the injected :class:`~flotilla.clock.Clock`, so with a
:class:`~flotilla.testing.FakeClock` a nak's delay and ``ack_wait`` pass when
the test advances the clock, and not before.  A consumer with nothing to take
sleeps until either a change wakes it (an :class:`asyncio.Event` replaced on
every change) or the clock reaches the queue's next due time: no polling, no
background task.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Awaitable, Sequence

import msgspec

from flotilla.aio import wait_first
from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConfigError, Unavailable
from flotilla.events.backend import Subscription
from flotilla.events.envelope import DeadLetter, Envelope

__all__ = ["MemoryEvents"]


class _Item:
    """One event in one group's queue."""

    __slots__ = ("deliveries", "envelope", "expires_at", "holder", "ready_at")

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope
        self.deliveries = 0
        self.ready_at = 0.0
        """Not delivered before this time (a nak's delay)."""
        self.holder: int | None = None
        """The delivery that holds it, until ``expires_at``."""
        self.expires_at = 0.0

    def held(self, now: float) -> bool:
        return self.holder is not None and self.expires_at > now


class _Group:
    """A consumer group's queue (a broadcast subscription is a group per instance)."""

    def __init__(self, name: str, ack_wait: float) -> None:
        self.name = name
        self.ack_wait = ack_wait
        self.queue: list[_Item] = []

    def take(self, now: float) -> _Item | None:
        """The first item that may be delivered now, if any (see the module docstring)."""
        blocked: set[str] = set()
        for item in self.queue:
            key = item.envelope.key
            if key is not None:
                if key in blocked:
                    continue
                blocked.add(key)  # whatever happens to this item, later ones of its key wait
            if not item.held(now) and item.ready_at <= now:
                return item
        return None

    def next_due(self, now: float) -> float | None:
        """The earliest future time at which an item may become deliverable."""
        times = [item.ready_at for item in self.queue if item.ready_at > now]
        times += [item.expires_at for item in self.queue if item.held(now)]
        return min(times, default=None)

    def remove(self, item: _Item) -> bool:
        try:
            self.queue.remove(item)
        except ValueError:
            return False  # already acked or dead-lettered by an earlier delivery
        return True


class _MemoryDelivery:
    """One delivery of an item; a delivery that lost its hold (ack_wait passed) acts no more,
    except ``ack``: the work was done, and doing it again would gain nothing."""

    def __init__(
        self, events: MemoryEvents, group: _Group, item: _Item, token: int, envelope: Envelope
    ) -> None:
        self._events = events
        self._group = group
        self._item = item
        self._token = token
        self._envelope = envelope

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    def _current(self) -> bool:
        return self._item.holder == self._token and self._item in self._group.queue

    async def ack(self) -> None:
        if self._group.remove(self._item):
            self._events._notify()

    async def nak(self, delay: float) -> None:
        if self._current():
            self._item.holder = None
            self._item.ready_at = self._events._clock.time() + max(0.0, delay)
            self._events._notify()

    async def dead_letter(self, error: str) -> None:
        if self._current() and self._group.remove(self._item):
            self._events._add_dead_letter(self._envelope, self._group.name, error)

    async def in_progress(self) -> None:
        if self._current():
            self._item.expires_at = self._events._clock.time() + self._group.ack_wait


class MemoryEvents:
    """An :class:`~flotilla.events.backend.EventBackend` for one process (tests, the test kit).

    Nothing survives the process: ``publish`` is as durable as this object.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._topics: set[str] = set()
        self._tails: dict[str, list[asyncio.Queue[Envelope]]] = {}
        self._dead: list[DeadLetter] = []
        self._tokens = itertools.count(1)
        self._changed = asyncio.Event()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> MemoryEvents:
        """The backend for ``memory://`` (which takes no path)."""
        _, _, rest = url.partition("://")
        if rest:
            raise ConfigError(f"memory:// takes no path, got {url!r}")
        return cls(clock)

    async def declare(self, subscription: Subscription) -> None:
        self._check_open()
        self._declare(subscription)

    def _declare(self, subscription: Subscription) -> _Group:
        name = _group_name(subscription)
        group = self._group(subscription.topic, name)
        group.ack_wait = subscription.ack_wait
        return group

    def _group(self, topic: str, name: str) -> _Group:
        group = self._groups.get((topic, name))
        if group is None:
            group = self._groups[topic, name] = _Group(name, ack_wait=30.0)
        return group

    async def publish(self, envelope: Envelope) -> None:
        self._check_open()
        self._topics.add(envelope.topic)
        for (topic, _), group in self._groups.items():
            if topic == envelope.topic:
                group.queue.append(_Item(envelope))
        for tail in self._tails.get(envelope.topic, ()):
            tail.put_nowait(envelope)
        self._notify()

    async def subscribe(self, subscription: Subscription) -> AsyncGenerator[_MemoryDelivery, None]:
        """Deliveries for ``subscription``; ends when the backend closes (or is closed)."""
        if self._closed:
            return  # nothing more will come: the consumer ends rather than asks again
        group = self._declare(subscription)
        while not self._closed:
            changed = self._changed
            now = self._clock.time()
            item = group.take(now)
            if item is not None:
                yield self._deliver(group, item, now)
                continue
            waits: list[Awaitable[object]] = [changed.wait()]
            due = group.next_due(now)
            if due is not None:
                waits.append(self._sleep_until(due))
            await wait_first(*waits)

    async def _sleep_until(self, when: float) -> None:
        # The time left is read when this starts, not when it was made: a task
        # starts a loop iteration later, and a fake clock may have moved by then.
        await self._clock.sleep(when - self._clock.time())

    def _deliver(self, group: _Group, item: _Item, now: float) -> _MemoryDelivery:
        item.deliveries += 1
        item.holder = token = next(self._tokens)
        item.expires_at = now + group.ack_wait
        envelope = msgspec.structs.replace(item.envelope, attempt=item.deliveries)
        return _MemoryDelivery(self, group, item, token, envelope)

    async def tail(self, topic: str) -> AsyncGenerator[Envelope, None]:
        """Events of ``topic`` published from the first ``anext`` on; ends with the backend."""
        self._check_open()
        queue: asyncio.Queue[Envelope] = asyncio.Queue()
        tails = self._tails.setdefault(topic, [])
        tails.append(queue)
        try:
            while not self._closed:
                changed = self._changed
                while not queue.empty():
                    yield queue.get_nowait()
                if not self._closed:
                    await changed.wait()
        finally:
            tails.remove(queue)

    async def dead_letters(self, *, topic: str | None = None, limit: int = 100) -> list[DeadLetter]:
        self._check_open()
        found = [dead for dead in self._dead if topic is None or dead.envelope.topic == topic]
        return found[:limit]

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        self._check_open()
        wanted = None if ids is None else set(ids)
        chosen = [d for d in self._dead if wanted is None or d.envelope.id in wanted]
        for dead in chosen:
            self._dead.remove(dead)
            envelope = msgspec.structs.replace(dead.envelope, attempt=1)
            self._group(envelope.topic, dead.group).queue.append(_Item(envelope))
        if chosen:
            self._notify()
        return len(chosen)

    async def topics(self) -> list[str]:
        self._check_open()
        return sorted(self._topics)

    async def aclose(self) -> None:
        """End every subscription and tail; later calls raise ``Unavailable``."""
        if not self._closed:
            self._closed = True
            self._notify()

    def _add_dead_letter(self, envelope: Envelope, group: str, error: str) -> None:
        self._dead.append(
            DeadLetter(envelope=envelope, group=group, error=error, time=self._clock.time())
        )
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the memory event backend is closed")


def _group_name(subscription: Subscription) -> str:
    if subscription.broadcast:
        return f"{subscription.group}@{subscription.instance}"
    return subscription.group

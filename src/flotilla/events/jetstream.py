"""The cluster event backend: NATS JetStream (``nats://host:4222``).

Subjects, streams and consumers are named in
:mod:`flotilla.events.jetstream_names` (read its docstring first).  In short:
one stream per system, a group is a set of durable pull consumers (one per key
partition with ``max_ack_pending=1`` for per-key order across instances, one
for keyless events, one for the group's replays), and dead letters live in a
stream of their own.

* :meth:`JetStreamEvents.publish` waits for the server's acknowledgement (the
  event is on disk) and sends the event id as ``Nats-Msg-Id``, so a publish
  retried within the stream's duplicate window (2 min) is stored once.
  Failures are :class:`~flotilla.errors.Unavailable`, which means "not known
  to be stored": the bytes may still reach the server after a reconnect, so
  publish again with the *same* envelope (the outbox does), and it is stored once.
* A subscription asks all its consumers that may have a message
  (:mod:`~flotilla.events.jetstream_turns`) at once, for as many as its
  subscriber has room for (``max_in_flight`` less the deliveries it holds:
  :mod:`~flotilla.events.jetstream_take`, :mod:`~flotilla.events.jetstream_pull`),
  one round trip for the lot; what it took and did not hand out when the
  subscriber stops asking is naked at once.  With nothing anywhere it sleeps
  until an event is published on its topic or ``poll`` seconds pass, which is
  how a nak's delay or an ``ack_wait`` that ran out is noticed.  ``attempt``
  is JetStream's delivery count.
* ``ack_wait`` is at least ``MIN_ACK_WAIT`` (1 s): nats-server 2.9 hands a
  pulled message out again at once when it is shorter.
* ack / nak(delay) / in_progress are JetStream's; JetStream's own delivery cap
  is off (``max_deliver=-1``): the consumer dead-letters before any cap.
  ``dead_letter`` stores a :class:`DeadLetter` in ``P_DLQ`` and then
  terminates the message.
* A broadcast subscription is the group ``"<group>@<instance>"``; its
  consumers are deleted by the server after ``BROADCAST_IDLE`` seconds
  without a subscriber (a gone instance leaves nothing behind for long).
* Replay publishes the envelope (attempt 1) to the group's replay subject and
  deletes the dead letter.  A replayed event of a key is not ordered with
  that key's later events (it was given up on: order was already lost).

Every process of a system must use the same ``prefix`` and ``partitions``.
URL options: ``nats://host:4222?prefix=FLOTILLA_EVENTS&partitions=8&poll=0.5&batch=64``.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncGenerator, Sequence
from urllib.parse import parse_qs, urlsplit

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.js import api

from flotilla.aio import wait_first
from flotilla.clock import Clock
from flotilla.errors import ConfigError
from flotilla.events.backend import Subscription
from flotilla.events.envelope import DeadLetter, Envelope
from flotilla.events.jetstream_delivery import JetStreamDelivery, decode_envelope
from flotilla.events.jetstream_names import (
    KEYLESS,
    REPLAYS,
    check_topic,
    consumer_name,
    dead_letter_subject,
    dlq_stream,
    event_subject,
    replay_subject,
    topic_of,
)
from flotilla.events.jetstream_pull import Puller
from flotilla.events.jetstream_take import Taker
from flotilla.nats_link import NatsLink, nats_errors_as_unavailable

__all__ = ["JetStreamEvents"]

log = logging.getLogger("flotilla.events")

DEFAULT_PREFIX = "FLOTILLA_EVENTS"
BROADCAST_IDLE = 300.0
# nats-server 2.9 redelivers a pulled message at once when ack_wait is under a second.
MIN_ACK_WAIT = 1.0
_OPTIONS = {"prefix", "partitions", "poll", "batch"}

_encode = msgspec.msgpack.encode
_decode_dead = msgspec.msgpack.Decoder(DeadLetter).decode


class JetStreamEvents:
    """An :class:`~flotilla.events.backend.EventBackend` on NATS JetStream.

    ``prefix`` names the streams and subjects, ``partitions`` the key
    partitions (both must be the same in every process of a system); ``poll``
    is how often an idle subscription looks for redeliveries; ``batch`` caps
    the deliveries a subscription holds at once below its subscriber's
    ``max_in_flight`` (None: no cap of its own); ``max_age``
    how long the stream keeps events; ``timeout`` the most a call waits on
    the server before it is ``Unavailable``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        partitions: int = 8,
        poll: float = 0.5,
        batch: int | None = None,
        max_age: float = 7 * 86400,
        timeout: float = 5.0,
    ) -> None:
        if not prefix.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"events prefix {prefix!r} must be letters, digits, '_' or '-'")
        if not 1 <= partitions <= 1024:
            raise ConfigError(f"partitions must be 1..1024, not {partitions!r}")
        if not poll > 0:
            raise ConfigError(f"poll must be positive, not {poll!r}")
        if batch is not None and batch < 1:
            raise ConfigError(f"batch must be at least 1, not {batch!r}")
        self._link = NatsLink(url, what="event backend", timeout=timeout)
        self.prefix = prefix
        self.partitions = partitions
        self.poll = poll
        self.batch = batch
        """The most deliveries a subscription holds at once, if fewer than its ``max_in_flight``."""
        self._max_age = max_age
        self._ready = False
        self._closing = asyncio.Event()

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> JetStreamEvents:
        """The backend for ``nats://host:port?prefix=..&partitions=..&poll=..``.

        ``clock`` is ignored: redelivery timers run in the server.
        """
        query = {name: values[-1] for name, values in parse_qs(urlsplit(url).query).items()}
        unknown = set(query) - _OPTIONS
        if unknown:
            raise ConfigError(f"events URL {url!r}: unknown option(s) {sorted(unknown)}")
        try:
            return cls(
                url,
                prefix=query.get("prefix", DEFAULT_PREFIX),
                partitions=int(query.get("partitions", 8)),
                poll=float(query.get("poll", 0.5)),
                batch=int(query["batch"]) if "batch" in query else None,
            )
        except ValueError as exc:
            raise ConfigError(f"events URL {url!r}: {exc}") from None

    # -- the Protocol -----------------------------------------------------------------------

    async def declare(self, subscription: Subscription) -> None:
        """Create the subscription's consumers if missing (new ones start at the log's end)."""
        check_topic(subscription.topic)
        await self._open()
        js = await self._link.jetstream()
        group = _group_name(subscription)
        idle = BROADCAST_IDLE if subscription.broadcast else None
        for part, subject in self._parts(subscription.topic, group):
            config = api.ConsumerConfig(
                durable_name=consumer_name(subscription.topic, group, part),
                description=f"flotilla group {group!r} of topic {subscription.topic!r}",
                deliver_policy=api.DeliverPolicy.NEW,
                ack_policy=api.AckPolicy.EXPLICIT,
                ack_wait=max(MIN_ACK_WAIT, subscription.ack_wait),
                max_deliver=-1,
                max_ack_pending=1 if part not in (KEYLESS, REPLAYS) else -1,
                filter_subject=subject,
                inactive_threshold=idle,
            )
            with nats_errors_as_unavailable(f"declaring group {group!r}"):
                await js.add_consumer(self.prefix, config)  # an existing one keeps its place

    async def publish(self, envelope: Envelope) -> None:
        """Store ``envelope`` in the stream; returns once the server acknowledged it."""
        check_topic(envelope.topic)
        await self._open()
        js = await self._link.jetstream()
        subject = event_subject(self.prefix, envelope.topic, envelope.key, self.partitions)
        with nats_errors_as_unavailable(f"publishing {envelope.topic!r}"):
            await js.publish(subject, _encode(envelope), headers={"Nats-Msg-Id": envelope.id})

    async def subscribe(
        self, subscription: Subscription
    ) -> AsyncGenerator[JetStreamDelivery, None]:
        """Deliveries for ``subscription``, up to its ``max_in_flight`` held at once
        (see the module docstring)."""
        await self.declare(subscription)
        client = await self._link.connection()
        group = _group_name(subscription)
        parts = self._parts(subscription.topic, group)
        pullers = [
            Puller(client, self.prefix, consumer_name(subscription.topic, group, part),
                   timeout=self._link.timeout, bounded=part not in (KEYLESS, REPLAYS))
            for part, _ in parts
        ]  # fmt: skip
        # Never more than the subscriber has room for, whatever ``batch`` says.
        limit = min(self.batch or subscription.max_in_flight, subscription.max_in_flight)
        taker = Taker(pullers, limit=limit)
        by_subject = {subject: index for index, (_, subject) in enumerate(parts)}

        async def ring(msg: Msg) -> None:
            index = by_subject.get(msg.subject)
            if index is not None:
                taker.candidates.mark(index)

        bells = [
            await client.subscribe(f"{self.prefix}.ev.{subscription.topic}.*", cb=ring),
            await client.subscribe(replay_subject(self.prefix, group, subscription.topic), cb=ring),
        ]
        try:
            while not self._link.closed:
                _raise_if_cancelled()
                taken = taker.next()
                if taken is not None:
                    delivery = await self._delivery(taken, group, taker)
                    if delivery is not None:
                        yield delivery
                    continue
                taker.candidates.changed.clear()
                if await taker.take():
                    continue
                await wait_first(
                    taker.candidates.changed.wait(), self._closing.wait(), asyncio.sleep(self.poll)
                )
                if not taker.candidates.changed.is_set():
                    taker.candidates.mark_all()  # a quiet poll: look for redeliveries everywhere
        finally:
            await self._give_back(taker)
            await self._unsubscribe(client, pullers, bells)

    async def tail(self, topic: str) -> AsyncGenerator[Envelope, None]:
        """Events of ``topic`` as they are published from now on (a plain NATS subscription)."""
        check_topic(topic)
        client = await self._link.connection()
        sub = await client.subscribe(f"{self.prefix}.ev.{topic}.*")
        try:
            while not self._link.closed:
                try:
                    # Bounded waits: a closed backend ends the tail within ``poll``.
                    msg = await sub.next_msg(timeout=self.poll)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.ConnectionClosedError:
                    return
                envelope = decode_envelope(msg.data)
                if envelope is not None:
                    yield envelope
        finally:
            if not client.is_closed:
                await sub.unsubscribe()

    async def dead_letters(
        self, *, topic: str | None = None, limit: int = 100
    ) -> builtins.list[DeadLetter]:
        """The dead letters, oldest first, optionally of one topic."""
        return [dead for _, dead in await self._read_dead_letters(topic, limit)]

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Send dead letters back to the group that gave up on them; how many were."""
        js = await self._link.jetstream()
        wanted = None if ids is None else set(ids)
        count = 0
        for seq, dead in await self._read_dead_letters(None, None):
            if wanted is not None and dead.envelope.id not in wanted:
                continue
            again = msgspec.structs.replace(dead.envelope, attempt=1)
            subject = replay_subject(self.prefix, dead.group, again.topic)
            with nats_errors_as_unavailable("replaying a dead letter"):
                await js.publish(subject, _encode(again))
                await js.delete_msg(dlq_stream(self.prefix), seq)
            count += 1
        return count

    async def topics(self) -> builtins.list[str]:
        """Every topic with an event still in the stream."""
        await self._open()
        js = await self._link.jetstream()
        with nats_errors_as_unavailable("listing topics"):
            info = await js.stream_info(self.prefix, subjects_filter=f"{self.prefix}.ev.>")
        found = {topic_of(self.prefix, subject) for subject in info.state.subjects or {}}
        return sorted(topic for topic in found if topic is not None)

    async def aclose(self) -> None:
        """Close the connection and end every subscription; idempotent."""
        self._closing.set()
        await self._link.aclose()

    # -- helpers ----------------------------------------------------------------------------

    def _parts(self, topic: str, group: str) -> builtins.list[tuple[str, str]]:
        """(part, filter subject) of each consumer of the group: keyless, replays, partitions."""
        head = f"{self.prefix}.ev.{topic}"
        parts = [
            (KEYLESS, f"{head}.{KEYLESS}"),
            (REPLAYS, replay_subject(self.prefix, group, topic)),
        ]
        return parts + [(str(p), f"{head}.{p}") for p in range(self.partitions)]

    async def _unsubscribe(
        self, client: Client, pullers: builtins.list[Puller], bells: builtins.list[NatsSub]
    ) -> None:
        """End a subscription's NATS subscriptions, within ``timeout`` (a stalled server
        must not hold up whoever closes the iterator)."""
        try:
            async with asyncio.timeout(self._link.timeout):
                for puller in pullers:
                    await puller.aclose()
                for bell in bells:
                    if not client.is_closed:
                        await bell.unsubscribe()
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("event subscription: unsubscribing from NATS: %r", exc)

    async def _delivery(
        self, taken: tuple[Msg, int], group: str, taker: Taker
    ) -> JetStreamDelivery | None:
        msg, index = taken

        def ended() -> None:
            taker.ended(index)

        envelope = decode_envelope(msg.data)
        if envelope is None:  # not an event of ours: nothing can handle it
            with nats_errors_as_unavailable("terminating a foreign message"):
                await msg.term()
            ended()
            return None
        return JetStreamDelivery(msg, envelope, group=group, backend=self, ended=ended)

    async def _give_back(self, taker: Taker) -> None:
        """Nak what was taken and not handed out (the subscriber stopped asking), at once:
        the group's other consumers get it now, not after ``ack_wait``.  The server
        counts the nak as a delivery (its next ``attempt`` is one higher); waiting for
        ``ack_wait`` instead would count it too."""
        if self._link.closed:
            return  # nothing to say it with: they come back after ``ack_wait``
        try:
            async with asyncio.timeout(self._link.timeout):
                while taker.ready:
                    msg, _ = taker.ready.popleft()
                    await msg.nak()
        except (TimeoutError, nats.errors.Error) as exc:
            log.warning("event subscription: giving back taken events: %r", exc)

    async def store_dead_letter(self, dead: DeadLetter) -> None:
        """Keep ``dead`` in the dead-letter stream (for :class:`JetStreamDelivery`)."""
        js = await self._link.jetstream()
        with nats_errors_as_unavailable("storing a dead letter"):
            await js.publish(dead_letter_subject(self.prefix, dead.envelope.topic), _encode(dead))

    async def _read_dead_letters(
        self, topic: str | None, limit: int | None
    ) -> builtins.list[tuple[int, DeadLetter]]:
        await self._open()
        js = await self._link.jetstream()
        stream = dlq_stream(self.prefix)
        subject = f"{stream}.>" if topic is None else dead_letter_subject(self.prefix, topic)
        found: builtins.list[tuple[int, DeadLetter]] = []
        seq = 1
        while limit is None or len(found) < limit:
            with nats_errors_as_unavailable("reading dead letters"):
                try:
                    raw = await js.get_msg(stream, seq, subject=subject, next=True)
                except nats.js.errors.NotFoundError:
                    break
            assert raw.seq is not None
            seq = raw.seq + 1
            try:
                found.append((raw.seq, _decode_dead(raw.data or b"")))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # not a dead letter of ours
        return found

    async def _open(self) -> None:
        """Create the streams if missing (on first use)."""
        self._link.check_open()
        if self._ready:
            return
        js = await self._link.jetstream()
        events = api.StreamConfig(
            name=self.prefix,
            subjects=[f"{self.prefix}.ev.>", f"{self.prefix}.rp.>"],
            max_age=self._max_age,
            duplicate_window=120.0,
        )
        dead = api.StreamConfig(
            name=dlq_stream(self.prefix), subjects=[f"{dlq_stream(self.prefix)}.>"]
        )
        with nats_errors_as_unavailable("creating the event streams"):
            for config in (events, dead):
                try:
                    await js.stream_info(config.name or "")
                except nats.js.errors.NotFoundError:
                    await js.add_stream(config)
        self._ready = True


def _group_name(subscription: Subscription) -> str:
    """A broadcast subscription is a group of its own per instance."""
    if subscription.broadcast:
        return f"{subscription.group}@{subscription.instance}"
    return subscription.group


def _raise_if_cancelled() -> None:
    """Honour a cancellation that an inner ``asyncio.wait_for`` (nats-py's ``next_msg``)
    lost: on Python 3.11 it returns a result that raced the cancel, and the loop
    would go on asking for ever under a caller that waits for it to end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

"""The embedded event backend: one SQLite log shared by every process on a machine.

No server: publishers and consumers in any number of processes open the same
file through a :class:`~flotilla.sqlite_worker.SqliteWorker` (one thread,
WAL, busy waits, a replaced file reopened, failures as ``Unavailable``, a
``0600`` file).  The tables and the life of a delivery are in
:mod:`flotilla.events.sqlite_log`; how consumers learn of other processes'
writes within a millisecond is in :mod:`flotilla.events.sqlite_wake`.

A subscription's loop::

    rows in hand? -> yield the next as a Delivery
    claim (a look without the write lock; if it may find something, one BEGIN
           IMMEDIATE: take in new events, claim the first claimable rows, as
           many as the subscriber has room for: ``max_in_flight`` less the
           deliveries it holds)
      ├─ rows   -> in hand; yield the first
      └─ none   -> wait with the other idle subscriptions (sqlite_idle: one look
                   for all of them per change to the file) until a look finds
                   something, the group's next row becomes visible (a nak's
                   delay, a dead consumer's ack_wait), or aclose
    closed with rows in hand -> give them back (as if never claimed)

Retention: now and then (every ``prune_every`` seconds, on a publish or an
idle claim) events every group of their topic has acked and stored more
than ``retention`` seconds ago are deleted, and broadcast groups unseen for
``broadcast_expiry`` seconds with them; dead-lettered events stay until
replayed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import msgspec

from flotilla.aio import cancel_and_wait, wait_first
from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConfigError, FailedPrecondition, Unavailable
from flotilla.events import sqlite_log as log_sql
from flotilla.events.backend import Delivery, Subscription
from flotilla.events.envelope import DeadLetter, Envelope
from flotilla.events.sqlite_batch import GroupCommit
from flotilla.events.sqlite_idle import IdleSubscriptions
from flotilla.events.sqlite_log import Claimed, GroupRef, Idle
from flotilla.events.sqlite_schema import SCHEMA
from flotilla.events.sqlite_wake import ChangeWatch
from flotilla.sqlite_worker import SqliteWorker

__all__ = ["SqliteEvents"]

log = logging.getLogger("flotilla.events")

_T = TypeVar("_T")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Envelope).decode

# Events deleted by one prune at most: about 10 ms of the file's write lock.
_PRUNE_CHUNK = 5000
# After a failure to use the file, a consumer tries again after this, doubling up to the max.
_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0


class SqliteEvents:
    """An :class:`~flotilla.events.backend.EventBackend` in one SQLite file.

    ``retention``, ``broadcast_expiry`` and ``prune_every`` are seconds of ``clock``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock | None = None,
        retention: float = 300.0,
        broadcast_expiry: float = 3600.0,
        prune_every: float = 10.0,
    ) -> None:
        for name, value in [
            ("prune_every", prune_every),
            ("broadcast_expiry", broadcast_expiry),
        ]:
            if not value > 0:
                raise ConfigError(f"{name} must be positive, not {value!r}")
        if not retention >= 0:
            raise ConfigError(f"retention must be zero or more, not {retention!r}")
        self._worker = SqliteWorker(path, SCHEMA, what="event log")
        self.path = self._worker.path
        self._clock: Clock = clock or SystemClock()
        self._retention = retention
        self._broadcast_expiry, self._prune_every = broadcast_expiry, prune_every
        self._next_prune = -float("inf")
        self._watch = ChangeWatch(self.path)
        self._watch_task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        # Concurrent publishes (handlers emitting) and acks (a consumer's
        # concurrent handlers) each share a commit.
        self._publishes = GroupCommit(self._worker, log_sql.insert_events)
        self._acks: GroupCommit[Claimed] = GroupCommit(self._worker, self._ack_rows)
        self._idlers = IdleSubscriptions(self._watch, self._look, self._clock)
        self._idlers_task: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> SqliteEvents:
        """The log at ``sqlite:///abs/path.db`` or ``sqlite://relative/path.db``."""
        from flotilla.resolve import sqlite_path

        return cls(sqlite_path(url), clock=clock)

    async def publish(self, envelope: Envelope) -> None:
        """Store ``envelope`` (committed when this returns); an id stored before is kept once."""
        row = (envelope.id, envelope.topic, envelope.key, _encode(envelope), self._clock.time())
        await self._publishes.add(row)
        self._watch.poke()  # local consumers at once; other processes see the file change
        await self._maybe_prune()

    async def declare(self, subscription: Subscription) -> None:
        """Create the subscription's group at the end of the log, unless it exists."""
        group = _group_of(subscription)
        await self._worker.run(partial(log_sql.declare, group=group, now=self._clock.time()))

    def subscribe(self, subscription: Subscription) -> AsyncIterator[Delivery]:
        """Deliveries for ``subscription``, as many claimed in one transaction as it has
        room for (see the module docstring); its group is declared on first use."""
        if not subscription.ack_wait > 0:
            raise ConfigError(f"ack_wait must be positive, not {subscription.ack_wait!r}")
        return self._deliveries(subscription)

    def tail(self, topic: str) -> AsyncIterator[Envelope]:
        """Events of ``topic`` stored from the first iteration on (no group, no acks)."""
        return self._tail(topic)

    async def dead_letters(self, *, topic: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The dead letters, oldest first, optionally of one topic."""

        def read(conn: sqlite3.Connection) -> list[tuple[str, str, bytes, str, int, str, float]]:
            return conn.execute(log_sql.DEAD_LETTERS, {"topic": topic, "limit": limit}).fetchall()

        letters = []
        for event_id, event_topic, blob, group, attempt, error, time in await self._worker.run(
            read
        ):
            envelope = msgspec.structs.replace(
                _stored(event_id, event_topic, blob), attempt=attempt
            )
            letters.append(DeadLetter(envelope=envelope, group=group, error=error, time=time))
        return letters

    async def replay(self, ids: Sequence[str] | None = None) -> int:
        """Give dead letters back to their groups (``None``: all); returns how many."""
        chosen = None if ids is None else list(ids)
        count = await self._worker.run(partial(log_sql.replay, ids=chosen, now=self._clock.time()))
        self._watch.poke()
        return count

    async def topics(self) -> list[str]:
        """Every topic that has seen an event, sorted."""

        def read(conn: sqlite3.Connection) -> list[str]:
            return [name for (name,) in conn.execute("SELECT name FROM topics ORDER BY name")]

        return await self._worker.run(read)

    async def aclose(self) -> None:
        """End every subscription and tail, stop watching, close the file; idempotent."""
        self._closing.set()
        self._idlers.wake_all()
        for task in (self._idlers_task, self._watch_task):
            if task is not None:
                await cancel_and_wait(task)
        self._idlers_task = self._watch_task = None
        await self._publishes.drain()
        await self._acks.drain()
        await self._worker.aclose()

    # -- a subscription ----------------------------------------------------------------------

    async def _deliveries(self, subscription: Subscription) -> AsyncGenerator[Delivery, None]:
        group = _group_of(subscription)
        owner = subscription.instance or secrets.token_hex(4)
        self._start_watch()
        in_hand: collections.deque[Claimed] = collections.deque()
        holding = _Holding()
        try:
            while not self._closing.is_set():
                if in_hand:
                    row = in_hand.popleft()
                    delivery = await self._delivery(row, subscription.ack_wait, holding)
                    if delivery is not None:
                        yield delivery
                    continue
                generation = self._watch.generation
                # As many rows as the subscriber has room for now, never more:
                # what it could not start stays with the other consumers of its group.
                room = max(1, subscription.max_in_flight - holding.count)
                claimed, next_visible = await self._claim(group, subscription, owner, limit=room)
                if self._closing.is_set():
                    return  # rows claimed as we closed come back after ack_wait
                if claimed:
                    in_hand.extend(claimed)
                    continue
                await self._maybe_prune()
                await self._idlers.wait(group, generation, next_visible)
        finally:
            if in_hand and not self._closing.is_set():
                await self._give_back(list(in_hand))

    async def _claim(
        self, group: GroupRef, subscription: Subscription, owner: str, *, limit: int
    ) -> tuple[list[Claimed], float | None]:
        def work(conn: sqlite3.Connection) -> tuple[list[Claimed], float | None]:
            return log_sql.claim(
                conn,
                group,
                owner=owner,
                now=self._clock.time(),
                ack_wait=subscription.ack_wait,
                limit=limit,
                opened=self._worker.opened,
            )

        return await self._patiently(group.topic, work) or ([], None)

    async def _give_back(self, rows: list[Claimed]) -> None:
        """Rows claimed and never handed out: claimable again at once (else after ack_wait)."""
        # One claim's rows (claimed only with none in hand): of one file.
        work = partial(self._on_same_file, rows=rows, work=log_sql.release, opened=rows[0].opened)
        try:
            await self._worker.run(work)
        except (Unavailable, FailedPrecondition) as exc:
            log.debug("events: giving back %d claimed rows failed: %s", len(rows), exc)
            return
        self._watch.poke()

    async def _patiently(self, what: str, work: Callable[[sqlite3.Connection], _T]) -> _T | None:
        """``work`` on the worker; a file that cannot be used is tried again until it can.

        Each failure is logged, with pauses doubling up to a few seconds.
        None once the log is closed.
        """
        pause = _RETRY_FIRST
        while not self._closing.is_set():
            try:
                return await self._worker.run(work)
            except FailedPrecondition:
                return None  # closed
            except Unavailable as exc:
                log.warning("events %s: %s; trying again in %.1f s", what, exc, pause)
            await wait_first(self._closing.wait(), self._clock.sleep(pause))
            pause = min(pause * 2, _RETRY_MAX)
        return None

    async def _delivery(
        self, row: Claimed, ack_wait: float, holding: _Holding
    ) -> _SqliteDelivery | None:
        try:
            envelope = msgspec.structs.replace(_decode(row.envelope), attempt=row.attempt)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # Written by a newer or broken writer: keep it where people look.
            log.warning(
                "events: stored event seq %d does not decode (%s); dead-lettered", row.seq, exc
            )
            error = f"the stored event does not decode: {exc}"
            work = partial(log_sql.dead_letter, error=error, now=self._clock.time())
            with contextlib.suppress(Unavailable):  # then it comes back after ack_wait
                await self._end(row, work)
            return None
        return _SqliteDelivery(self, row, envelope, ack_wait, holding)

    async def _look(self, asked: Sequence[tuple[GroupRef, float]]) -> list[Idle | None]:
        return await self._worker.run(partial(log_sql.looks, asked=list(asked)))

    # -- a tail ------------------------------------------------------------------------------

    async def _tail(self, topic: str) -> AsyncGenerator[Envelope, None]:
        view = _TailView()

        def newer(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            if view.opened < 0:  # the first look: from the end of the log
                (view.after,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
            elif view.opened != self._worker.opened:
                view.after = 0  # a new file since the last look: all of it is new
            view.opened = self._worker.opened
            rows: list[tuple[int, bytes]] = conn.execute(
                "SELECT seq, envelope FROM events WHERE topic = ? AND seq > ? ORDER BY seq"
                " LIMIT 256",
                (topic, view.after),
            ).fetchall()
            if rows:
                view.after = rows[-1][0]
            return rows

        self._start_watch()
        while not self._closing.is_set():
            generation = self._watch.generation
            rows = await self._patiently(topic, newer)
            if rows is None:
                return
            for _, blob in rows:
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    yield _decode(blob)  # a watcher skips what it cannot read
            if not rows:
                await wait_first(self._watch.wait(generation), self._closing.wait())

    # -- helpers -----------------------------------------------------------------------------

    def _start_watch(self) -> None:
        if self._watch_task is None and not self._closing.is_set():
            loop = asyncio.get_running_loop()
            self._watch_task = loop.create_task(
                self._watch.run(), name=f"flotilla-events-watch {self.path}"
            )
            self._idlers_task = loop.create_task(
                self._idlers.run(), name=f"flotilla-events-idle {self.path}"
            )

    async def _end(self, row: Claimed, work: Callable[[sqlite3.Connection, Claimed], None]) -> None:
        """``work(conn, row)`` if the file is still the one ``row`` was claimed in."""
        await self._worker.run(partial(self._on_same_file, rows=row, work=work, opened=row.opened))
        self._watch.poke()  # the next event of its key may be claimable now

    def _ack_rows(self, conn: sqlite3.Connection, rows: list[Claimed]) -> None:
        log_sql.ack(conn, [row for row in rows if row.opened == self._worker.opened])

    async def _ack(self, row: Claimed) -> None:
        await self._acks.add(row)
        self._watch.poke()  # the next event of its key may be claimable now

    def _on_same_file(
        self,
        conn: sqlite3.Connection,
        rows: _T,
        work: Callable[[sqlite3.Connection, _T], None],
        opened: int,
    ) -> None:
        # On the worker thread, where ``opened`` cannot move while we look.
        if opened == self._worker.opened:
            work(conn, rows)

    async def _maybe_prune(self) -> None:
        now = self._clock.time()
        if now < self._next_prune:
            return
        self._next_prune = now + self._prune_every
        work = partial(
            log_sql.prune,
            older_than=now - self._retention,
            unseen_since=now - self._broadcast_expiry,
            limit=_PRUNE_CHUNK,
        )
        try:
            pruned = await self._worker.run(work)
        except FailedPrecondition:
            return  # closed meanwhile; the caller's own work is done
        except Unavailable as exc:
            log.warning("events %s: pruning failed: %s", self.path, exc)
            return
        if pruned == _PRUNE_CHUNK:
            self._next_prune = now  # more to go: another chunk at the next chance


class _Holding:
    """The deliveries one subscription handed out whose ack, nak or dead-letter has not come."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class _TailView:
    """Where a tail is in the file (touched on the worker thread only)."""

    def __init__(self) -> None:
        self.opened = -1  # the worker's count of openings when ``after`` was read
        self.after = 0


def _stored(event_id: str, topic: str, blob: bytes) -> Envelope:
    """The stored envelope; one that does not decode is shown with its raw bytes as payload."""
    try:
        return _decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Envelope(id=event_id, topic=topic, source="", instance="", time=0.0, payload=blob)


def _group_of(subscription: Subscription) -> GroupRef:
    # A broadcast subscription is a group of its own per instance.
    instance = subscription.instance if subscription.broadcast else ""
    return GroupRef(subscription.topic, subscription.group, instance)


class _SqliteDelivery:
    """One claimed row, ended by exactly one of ack, nak or dead_letter."""

    __slots__ = ("_ack_wait", "_backend", "_envelope", "_holding", "_row")

    def __init__(
        self,
        backend: SqliteEvents,
        row: Claimed,
        envelope: Envelope,
        ack_wait: float,
        holding: _Holding,
    ) -> None:
        self._backend, self._row, self._envelope, self._ack_wait = backend, row, envelope, ack_wait
        self._holding: _Holding | None = holding
        holding.count += 1

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    # Each of the three frees the subscription's slot even when it fails: the
    # subscriber is done with it, and the row comes back after ``ack_wait``.

    async def ack(self) -> None:
        try:
            await self._backend._ack(self._row)
        finally:
            self._ended()

    async def nak(self, delay: float) -> None:
        visible_at = self._backend._clock.time() + max(0.0, delay)
        try:
            await self._backend._end(self._row, partial(log_sql.retry_later, visible_at=visible_at))
        finally:
            self._ended()

    async def dead_letter(self, error: str) -> None:
        now = self._backend._clock.time()
        try:
            await self._backend._end(self._row, partial(log_sql.dead_letter, error=error, now=now))
        finally:
            self._ended()

    def _ended(self) -> None:
        if self._holding is not None:  # once, whichever of the three came (or came again)
            self._holding.count -= 1
            self._holding = None

    async def in_progress(self) -> None:
        visible_at = self._backend._clock.time() + self._ack_wait
        await self._backend._end(self._row, partial(log_sql.renew, visible_at=visible_at))

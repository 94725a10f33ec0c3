"""One unit of work on a service's database: its data, the events it emits, the event it handles.

::

    async with self.db.transaction(ctx) as tx:     # BEGIN
        (ctx is an event handler's: INSERT the event into the inbox;
         already there -> AlreadyHandled, nothing else happens)
        tx.session.add(...)                        # the service's own rows
        tx.emit("order.created", payload, key=k)   # kept in memory until the end
                                                   # end of block: flush, INSERT the emitted
                                                   # events into the outbox, COMMIT
                                                   # an exception: ROLLBACK, nothing stored

The data and the events commit together or not at all (the transactional
outbox); the relay publishes the events afterwards.  Recording the handled
event in the same transaction as its effect (the inbox) is what makes a
redelivered event harmless: its second transaction finds the row, and two
deliveries racing each other collide on the inbox's primary key, the loser
getting :class:`~flotilla.events.AlreadyHandled`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from flotilla.data.one_trip import insert_rows
from flotilla.data.schema import inbox, outbox
from flotilla.errors import InvalidArgument
from flotilla.events.backend import AlreadyHandled
from flotilla.events.envelope import Envelope, check_topic_and_key, new_event_id
from flotilla.headers import Headers

if TYPE_CHECKING:
    from flotilla.data.database import Database

__all__ = ["Transaction", "open_transaction"]

_encoder = msgspec.msgpack.Encoder()


class Transaction:
    """What the block of ``async with db.transaction() as tx`` works with."""

    def __init__(self, database: Database, session: AsyncSession, headers: Headers) -> None:
        self.session = session
        """The SQLAlchemy ``AsyncSession`` of this transaction (committed by the block)."""
        self._database = database
        self._headers = headers
        self.emitted: list[Envelope] = []
        """The events emitted so far, in order."""

    def emit(self, topic: str, payload: Any = None, *, key: str | None = None) -> Envelope:
        """Store an event in the outbox, in this transaction; returns its envelope.

        ``payload`` is anything msgspec encodes (a ``msgspec.Struct``, builtins...);
        events of one ``key`` are published, and handled, in the order emitted.
        A bad topic, key or payload raises ``InvalidArgument`` here, at once.
        """
        check_topic_and_key(topic, key)
        try:
            encoded = _encoder.encode(payload)
        except (TypeError, OverflowError, ValueError, RecursionError) as exc:
            raise InvalidArgument(f"payload of event {topic!r} cannot be encoded: {exc}") from None
        envelope = Envelope(
            id=new_event_id(),
            topic=topic,
            source=self._database.source,
            instance=self._database.instance,
            time=time.time(),
            payload=encoded,
            key=key,
            headers=self._headers,
        )
        self.emitted.append(envelope)
        return envelope

    async def _store_emitted(self, conn: AsyncConnection) -> None:
        if self.emitted:
            await insert_rows(conn, outbox, [_row(envelope) for envelope in self.emitted])


@asynccontextmanager
async def open_transaction(
    database: Database, context: object | None, *, event: Envelope | None, group: str
) -> AsyncIterator[Transaction]:
    """The scope behind :meth:`Database.transaction` (see the module docstring)."""
    event = event or _event_of(context)
    group = group or getattr(context, "group", None) or database.source
    async with database.connect() as conn:
        if event is not None:
            await _record_handled(conn, group, event.id)
        # The session joins the connection's transaction and never ends it
        # itself: the block's end commits data and outbox rows together.
        session = AsyncSession(bind=conn, expire_on_commit=False)
        try:
            tx = Transaction(database, session, _headers(context, event))
            yield tx
            await session.flush()
            await tx._store_emitted(conn)
        finally:
            await session.close()
    if tx.emitted:
        database.committed_events()


async def _record_handled(conn: AsyncConnection, group: str, event_id: str) -> None:
    if not group:
        raise InvalidArgument("the inbox needs a consumer group (group=...) for this database")
    try:
        row = {"group": group, "event_id": event_id, "handled_at": time.time()}
        await insert_rows(conn, inbox, [row])
    except IntegrityError:
        # The event is in the inbox (a redelivery), or a concurrent delivery
        # inserted it first and committed: its effect is there, ours must not be.
        raise AlreadyHandled(f"event {event_id} was already handled by group {group!r}") from None


def _event_of(context: object | None) -> Envelope | None:
    found = getattr(context, "event", None)
    return found if isinstance(found, Envelope) else None


def _headers(context: object | None, event: Envelope | None) -> Headers:
    """The headers emitted events carry: the context's, else the handled event's; no deadline."""
    headers = getattr(context, "headers", None)
    if not isinstance(headers, Headers):
        headers = event.headers if event is not None else Headers()
    return headers if headers.deadline is None else headers.replace(deadline=None)


def _row(envelope: Envelope) -> dict[str, Any]:
    return {
        "event_id": envelope.id,
        "topic": envelope.topic,
        "key": envelope.key,
        "source": envelope.source,
        "instance": envelope.instance,
        "time": envelope.time,
        "headers": _encoder.encode(envelope.headers),
        "payload": envelope.payload,
    }

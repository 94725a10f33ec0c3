"""The outbox table's statements: claim unsent rows, mark them sent, release them, prune.

A row's life::

    emitted (committed with the data) -> claimed by one relay (claimed_by, claimed_until)
        -> published -> sent_at set -> pruned after ``keep_sent``
        -> not published (failure, lease running out) -> released, claimed again later
        -> its relay died -> the claim expires at claimed_until -> claimed again

**One claimer per row at a time.**  A claim is one ``UPDATE ... RETURNING`` of
the first unsent rows whose claim is absent or expired, in a transaction that
claims alone: ``BEGIN IMMEDIATE`` on SQLite (one writer), and on PostgreSQL
an advisory transaction lock plus ``FOR UPDATE SKIP LOCKED`` on the rows.  A
relay claiming rows another relay holds would have to see an expired
``claimed_until``, and a relay stops publishing its batch before its claim
runs out, so two relays never publish one row at once.

**Order per key.**  A row is not claimed while an earlier unsent row of its key
is held by another relay: the rows of a key are published by one relay at a
time, in id order (the relay itself stops a key at its first failure).  Ids
follow commits when one transaction commits before the next begins; two open
at once on PostgreSQL may become visible out of id order, and then have no
order between them (nor could they: neither came first).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import (
    Float,
    Integer,
    String,
    bindparam,
    delete,
    exists,
    func,
    or_,
    select,
    text,
    update,
)

from flotilla.data.database import Database
from flotilla.data.one_trip import Fixed, run_fixed
from flotilla.data.schema import inbox, outbox
from flotilla.events.envelope import Envelope
from flotilla.headers import Headers

__all__ = ["Claimed", "OutboxStore"]

# The claims of one schema's outbox take turns on this advisory lock (the schema
# is the lock's second half: services sharing a server do not wait for each other).
_CLAIM_LOCK = f"pg_advisory_xact_lock({0x0F1071}, hashtext(current_schema()))"
_headers_decoder = msgspec.msgpack.Decoder(Headers)


class Claimed(msgspec.Struct, frozen=True):
    """One claimed row: its place in the outbox and its event."""

    row: int
    envelope: Envelope


class OutboxStore:
    """The outbox of one database, as the relay uses it."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def claim(
        self, claimer: str, *, limit: int, lease: float, sent: Sequence[int] = ()
    ) -> list[Claimed]:
        """Claim up to ``limit`` unsent rows until ``lease`` seconds from now, in id order.

        ``sent``: rows of this claimer's previous batch, marked sent in the same
        transaction (one transaction per batch instead of two).
        """
        now = time.time()
        async with self.database.connect() as conn:
            if sent:
                await run_fixed(conn, _MARK_SENT, _rows(claimer, sent, at=now))
            if conn.dialect.name == "postgresql":
                await conn.execute(select(text(_CLAIM_LOCK)))
            parameters = {"claimer": claimer, "now": now, "until": now + lease, "limit": limit}
            rows = await run_fixed(conn, _CLAIM, parameters)
        return sorted((_claimed(row) for row in rows), key=lambda claimed: claimed.row)

    async def settle(self, claimer: str, *, sent: Sequence[int], release: Sequence[int]) -> None:
        """Mark ``sent`` rows published and give ``release`` rows back, in one transaction
        (only rows this claimer still holds)."""
        if not (sent or release):
            return
        async with self.database.connect() as conn:
            if sent:
                await run_fixed(conn, _MARK_SENT, _rows(claimer, sent, at=time.time()))
            if release:
                await run_fixed(conn, _RELEASE, _rows(claimer, release))

    async def mark_sent(self, claimer: str, rows: Sequence[int]) -> None:
        """Record ``rows`` as published (only those this claimer still holds)."""
        await self.settle(claimer, sent=rows, release=())

    async def release(self, claimer: str, rows: Sequence[int]) -> None:
        """Give ``rows`` back unsent, to be claimed again at once."""
        await self.settle(claimer, sent=(), release=rows)

    async def prune(self, *, sent_before: float, handled_before: float) -> tuple[int, int]:
        """Delete sent rows and inbox rows older than the given times; how many of each."""
        async with self.database.connect() as conn:
            sent = await conn.execute(delete(outbox).where(outbox.c.sent_at < sent_before))
            handled = await conn.execute(delete(inbox).where(inbox.c.handled_at < handled_before))
        return sent.rowcount, handled.rowcount

    async def unsent(self) -> int:
        """How many rows wait to be published."""
        async with self.database.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
            )
        return int(count or 0)


def _claim_statement() -> Fixed:
    """The claim: the first free rows, none behind a row of its key that another holds.

    Built once: every value is a bound parameter (``claimer``, ``now``,
    ``until``, ``limit``), so a claim neither builds nor compiles SQL.
    """
    claimer, now = bindparam("claimer", type_=String), bindparam("now", type_=Float)
    earlier = outbox.alias("earlier")
    held_before = exists().where(
        earlier.c.key == outbox.c.key,
        earlier.c.id < outbox.c.id,
        earlier.c.sent_at.is_(None),
        earlier.c.claimed_until >= now,
        earlier.c.claimed_by != claimer,
    )
    free = (
        select(outbox.c.id)
        .where(
            outbox.c.sent_at.is_(None),
            or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
            ~held_before,
        )
        .order_by(outbox.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return Fixed(
        update(outbox)
        .where(outbox.c.id.in_(free.scalar_subquery()))
        .values(claimed_by=claimer, claimed_until=bindparam("until", type_=Float))
        .returning(*outbox.c)
    )


def _settle_statement(**values: object) -> Fixed:
    """Set ``values`` on the rows ``rows`` that ``claimer`` holds.

    The ids are one parameter, whatever their number: a JSON array on SQLite
    (``json_each``), an expanding ``IN`` elsewhere.
    """
    held = outbox.c.claimed_by == bindparam("claimer", type_=String)
    listed = func.json_each(bindparam("rows_json", type_=String)).table_valued("value")
    return Fixed(
        update(outbox).where(outbox.c.id.in_(bindparam("rows", expanding=True)), held)
        .values(**values),
        sqlite=update(outbox).where(outbox.c.id.in_(select(listed.c.value)), held)
        .values(**values),
    )  # fmt: skip


_CLAIM = _claim_statement()
_MARK_SENT = _settle_statement(sent_at=bindparam("at", type_=Float), claimed_until=None)
_RELEASE = _settle_statement(claimed_by=None, claimed_until=None)
_COLUMNS = tuple(column.name for column in outbox.c)  # the order RETURNING gives them in


def _rows(claimer: str, rows: Sequence[int], **more: object) -> dict[str, object]:
    ids = list(rows)
    return {"claimer": claimer, "rows": ids, "rows_json": json.dumps(ids), **more}


def _claimed(row: Sequence[Any]) -> Claimed:
    mapping = dict(zip(_COLUMNS, row, strict=True))
    return Claimed(
        row=mapping["id"],
        envelope=Envelope(
            id=mapping["event_id"],
            topic=mapping["topic"],
            source=mapping["source"],
            instance=mapping["instance"],
            time=mapping["time"],
            payload=bytes(mapping["payload"]),
            key=mapping["key"],
            headers=_headers_decoder.decode(mapping["headers"]),
        ),
    )

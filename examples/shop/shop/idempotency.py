"""Idempotency keys of order creation: one order per (user, key), whatever is retried.

A client that did not hear the answer sends the same request again with the
same ``Idempotency-Key``; it gets the order its first request made.  The key
remembers a digest of the request's body: the same key with another body is a
client bug, refused with ``AlreadyExists`` (409) rather than answered with an
order that is not the one asked for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import Column, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from flotilla import AlreadyExists, Database

from .sql import BigInt


def keys_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("user_id", String(64), primary_key=True),
        Column("key", String(200), primary_key=True),
        Column("digest", String(64), nullable=False),
        Column("order_id", BigInt, nullable=False),
    )


def body_digest(items: Sequence[Any], card_token: str) -> str:
    """What identifies a request's body: its lines in their order, and the card."""
    body = [[(item.product_id, item.quantity) for item in items], card_token]
    return hashlib.sha256(msgspec.msgpack.encode(body)).hexdigest()


class IdempotencyKeys:
    """The keys kept in ``table`` of the orders database."""

    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table

    async def order_of(self, user_id: str, key: str, digest: str) -> int | None:
        """The order made under ``key`` (None if none); ``AlreadyExists`` for another body."""
        async with self.db.transaction() as tx:
            return await self.find(tx.session, user_id, key, digest)

    async def find(self, session: AsyncSession, user_id: str, key: str, digest: str) -> int | None:
        """:meth:`order_of` inside a transaction of the caller's."""
        table = self.table
        query = select(table).where(table.c.user_id == user_id, table.c.key == key)
        row = (await session.execute(query)).first()
        if row is None:
            return None
        if row.digest != digest:
            raise AlreadyExists(
                f"idempotency_key: {key!r} was used for another request (order {row.order_id})",
                details={"field": "idempotency_key"},
            )
        return int(row.order_id)

    async def record(
        self, session: AsyncSession, user_id: str, key: str, digest: str, order_id: int
    ) -> None:
        """Remember that ``key`` made ``order_id`` (in the transaction that made it)."""
        await session.execute(
            insert(self.table).values(user_id=user_id, key=key, digest=digest, order_id=order_id)
        )

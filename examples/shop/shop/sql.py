"""What the shop's SQL needs spelled per dialect: 64-bit integer columns, insert-if-absent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["BigInt", "insert_if_absent"]

BigInt = BigInteger().with_variant(Integer(), "sqlite")
"""Every id, count and amount of the shop: 64-bit, as the API admits (``RowId``).

PostgreSQL's INTEGER is 32-bit, so a stock past 2**31 units or a total past
about 21 million (in cents) would overflow into a 500; SQLite's INTEGER is
already 64-bit, and only a column declared INTEGER is its autoincrementing rowid.
"""


async def insert_if_absent(session: AsyncSession, table: Table, **values: Any) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL); whether a row went in.

    Unlike catching ``IntegrityError``, this leaves the transaction usable, so
    an event handler's inbox record and its other writes still commit.
    """
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).values(**values).on_conflict_do_nothing()
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]

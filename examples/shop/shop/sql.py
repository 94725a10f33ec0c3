"""The one statement the shop needs that SQL dialects spell differently."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


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

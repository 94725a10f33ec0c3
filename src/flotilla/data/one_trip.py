"""Flotilla's own one-row inserts (inbox, outbox) on SQLite, in one trip to the driver's thread.

aiosqlite runs every call on a thread of its own, and SQLAlchemy's statement
takes three calls there (make a cursor, execute, close it): three hand-offs
between threads, each costing tens of microseconds of CPU, and far more wall
time on a busy machine, while the process's one SQLite writer waits.  The
inbox's insert and a single emitted event's insert are on every handled and
every emitting transaction, so they go straight to the driver instead: the
statement SQLAlchemy compiled for the dialect, executed in one call
(``execute_fetchall``; its cursor lives and dies on the driver's thread).

The relay's statements (:mod:`flotilla.data.outbox`), on every claim, go the
same way through :func:`run_fixed`: built once with bound parameters,
compiled once for SQLite, executed in one call there and through SQLAlchemy
elsewhere (its compiled cache then spares the building and compiling).

Errors keep the types SQLAlchemy would have raised (a duplicate inbox row is
still an ``IntegrityError``).  Any other driver, or several rows, take
SQLAlchemy's path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from sqlalchemy import Table, insert
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import UpdateBase

from flotilla.data.schema import inbox, outbox

__all__ = ["Fixed", "insert_rows", "run_fixed"]


class _Insert(NamedTuple):
    sql: str
    names: tuple[str, ...]
    """The columns, in the order of the statement's ``?`` parameters."""


def _compile(table: Table, columns: list[str]) -> _Insert:
    compiled = insert(table).compile(dialect=SQLiteDialect_aiosqlite(), column_keys=columns)
    return _Insert(str(compiled), tuple(compiled.positiontup or ()))


# Compiled once, at import: the columns every inbox and outbox row names.
_INSERTS: Mapping[str, _Insert] = MappingProxyType({
    inbox.name: _compile(inbox, ["group", "event_id", "handled_at"]),
    outbox.name: _compile(outbox, ["event_id", "topic", "key", "source", "instance", "time",
                                   "headers", "payload"]),
})  # fmt: skip


async def insert_rows(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    """``INSERT`` ``rows`` into ``table`` (the inbox or the outbox) in ``conn``'s transaction."""
    statement = _INSERTS.get(table.name)
    if (
        statement is None
        or len(rows) != 1
        or conn.dialect.driver != "aiosqlite"
        or rows[0].keys() != set(statement.names)
    ):
        await conn.execute(insert(table), rows)
        return
    parameters = [rows[0][name] for name in statement.names]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None  # the connection of an open transaction is checked out
    try:
        await driver.execute_fetchall(statement.sql, parameters)
    except sqlite3.Error as exc:  # the type SQLAlchemy would have raised (IntegrityError...)
        raise DBAPIError.instance(statement.sql, parameters, exc, sqlite3.Error) from exc


class Fixed:
    """A statement of fixed shape (its values all bound parameters), with its SQLite text.

    ``sqlite``: the statement SQLite runs instead, if it differs (the same
    parameters, or some of them).
    """

    def __init__(self, statement: UpdateBase, *, sqlite: UpdateBase | None = None) -> None:
        self.statement = statement
        self.names = frozenset(statement.compile().params)
        """The parameters ``statement`` takes (SQLAlchemy is given only these)."""
        compiled = (sqlite if sqlite is not None else statement).compile(
            dialect=SQLiteDialect_aiosqlite()
        )
        self.sqlite = _Insert(str(compiled), tuple(compiled.positiontup or ()))
        # The values bound at build time (an OFFSET 0, a NULL to set): the caller gives the rest.
        self.bound = dict(compiled.params)


async def run_fixed(
    conn: AsyncConnection, fixed: Fixed, parameters: Mapping[str, Any]
) -> Sequence[Sequence[Any]]:
    """Execute ``fixed`` with ``parameters`` in ``conn``'s transaction; the rows it returns
    (none for a statement that returns none), columns in the statement's order."""
    if conn.dialect.driver != "aiosqlite":
        chosen = {name: value for name, value in parameters.items() if name in fixed.names}
        result = await conn.execute(fixed.statement, chosen)
        return result.all() if result.returns_rows else []
    sql, names = fixed.sqlite
    values = [parameters[name] if name in parameters else fixed.bound[name] for name in names]
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None  # the connection of an open transaction is checked out
    try:
        return list(await driver.execute_fetchall(sql, values))
    except sqlite3.Error as exc:  # the type SQLAlchemy would have raised
        raise DBAPIError.instance(sql, values, exc, sqlite3.Error) from exc

"""The SQLAlchemy engine of a service's database, set up for its kind.

* **SQLite file**: the folder made ``0700`` and the file ``0600`` (whatever the
  umask); WAL, a busy timeout, ``synchronous=NORMAL`` (a commit survives the
  process's crash, which is what the outbox needs; a power loss may take the
  last few), and every transaction begun ``BEGIN IMMEDIATE``, so one that
  would write later never meets another writer mid-way (a deadlock SQLite
  reports at once rather than waits out).
* **SQLite in memory**: one connection for the whole process (else every
  connection would see a database of its own).
* **PostgreSQL** (asyncpg): connections pinged before use, so a restarted
  server is reconnected to rather than failing the next transaction.  A URL
  with ``?schema=NAME`` gets that schema as its connections' whole
  ``search_path``, so every table, Flotilla's and the service's, is made and
  found there; the migration creates the schema if missing
  (:mod:`flotilla.data.schema`, told by the engine's execution option
  :data:`SCHEMA_OPTION`).  Nothing else is on the path on purpose: were
  ``public`` on it, a ``flotilla_outbox`` of another service in ``public``
  would count as existing and never be created in the service's own schema.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from flotilla.data.url import SCHEMA_OPTION, is_memory, mask, schema_of
from flotilla.errors import ConfigError, FailedPrecondition, Unavailable

__all__ = ["SCHEMA_EXECUTION_OPTION", "create_engine", "reason"]

SCHEMA_EXECUTION_OPTION = "flotilla_schema"
"""The engine's execution option naming the schema its migration must create (if any)."""


def create_engine(url: URL, options: Mapping[str, Any], busy_timeout: float) -> AsyncEngine:
    """An engine for ``url``; ``ConfigError`` if its driver is missing or an option is bad."""
    options = dict(options)
    sqlite = url.drivername.startswith("sqlite")
    if sqlite and is_memory(url):
        options.setdefault("poolclass", StaticPool)
    elif sqlite and url.database:
        _prepare_file(Path(url.database))
    if sqlite:
        options.setdefault("pool_reset_on_return", None)  # see _configure_sqlite's reset
    elif not sqlite:
        options.setdefault("pool_pre_ping", True)
    schema = None if sqlite else schema_of(url)
    if schema is not None:
        url = url.difference_update_query([SCHEMA_OPTION])  # ours, not the driver's
        options["connect_args"] = _with_search_path(options.get("connect_args"), schema)
    try:
        engine = create_async_engine(url, **options)
    except ImportError as exc:
        raise ConfigError(
            f"database {mask(url)!r} needs a driver that is not installed ({exc}); "
            "install it with: pip install 'flotilla-mesh[postgres]'"
        ) from None
    except TypeError as exc:
        raise ConfigError(f"database {mask(url)!r}: bad engine option: {exc}") from None
    if sqlite:
        _configure_sqlite(engine, busy_timeout)
    if schema is not None:
        engine = engine.execution_options(**{SCHEMA_EXECUTION_OPTION: schema})
    return engine


def _with_search_path(connect_args: Any, schema: str) -> dict[str, Any]:
    """asyncpg's ``connect_args`` with ``search_path`` set to ``schema`` alone."""
    args = dict(connect_args or {})
    args["server_settings"] = {**args.get("server_settings", {}), "search_path": schema}
    return args


def reason(exc: BaseException) -> str:
    """What went wrong, in one line without SQL (for messages about a database)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, FailedPrecondition | ConfigError | Unavailable):
        return exc.message
    # SQLAlchemy wraps the driver's error; its first line names it without the SQL.
    original = getattr(exc, "orig", None) or exc
    first = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return f"{type(original).__name__}: {first}" if first else type(original).__name__


async def _begin_immediate(connection: Any) -> None:
    """``BEGIN IMMEDIATE`` on an aiosqlite connection, in one call to its thread."""
    await connection.executescript("BEGIN IMMEDIATE")


def _prepare_file(path: Path) -> None:
    """Create the database file's folder (``0700``) and the file itself ``0600``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _configure_sqlite(engine: AsyncEngine, busy_timeout: float) -> None:
    """WAL, a busy timeout, and ``BEGIN IMMEDIATE`` for every transaction."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling off: ours (below) begins them.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives the process's crash (what the
        # outbox needs); only a power loss may take the last few.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # One trip to the driver's thread (executescript keeps no statement open)
        # instead of three (cursor, execute, close) through exec_driver_sql: each
        # trip is a thread hand-off, and a transaction takes only a handful.
        conn.connection.dbapi_connection.run_async(_begin_immediate)

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        # Replaces the pool's rollback on check-in (``pool_reset_on_return=None``):
        # after a commit, or a rollback SQLAlchemy already did, there is nothing
        # to roll back, and asking costs a trip to the driver's thread.
        try:
            open_transaction = dbapi_connection.driver_connection.in_transaction
        except (ValueError, sqlite3.ProgrammingError):  # closed underneath: nothing to undo
            return
        if open_transaction:
            dbapi_connection.rollback()

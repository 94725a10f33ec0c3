"""How each kind of database is set up: private WAL files, one memory database, clear errors."""

from __future__ import annotations

import logging
import sqlite3
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from tests.data.conftest import Target, items, metadata
from tests.servers import POSTGRES, postgres_execute, require, unique_name

from flotilla.data import Database
from flotilla.data.engine import create_engine, reason
from flotilla.data.url import normalize_url
from flotilla.errors import ConfigError


async def test_a_file_database_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "orders.db"
    async with Target(f"sqlite://{path}", {}).opened() as database:
        assert database.ready
        await database.check()
        async with database.connect() as conn:
            assert await conn.scalar(text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(text("PRAGMA busy_timeout")) == 5000
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def _locked(path: Path) -> bool:
    """Whether another connection would have to wait to write ``path`` (it does not wait)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    finally:
        other.close()
    return False


async def test_a_file_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    async with Target(f"sqlite://{path}", {}).opened() as database:
        async with database.connect() as conn:
            assert _locked(path)  # before any write: BEGIN IMMEDIATE, not a deferred BEGIN
            await conn.execute(insert(items).values(id=1, name="a"))
        assert not _locked(path)
        async with database.connect() as conn:
            assert await conn.scalar(select(items.c.name)) == "a"


async def test_a_connection_given_back_mid_transaction_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    async with Target(f"sqlite://{path}", {}).opened() as database:
        engine = database._engine
        assert engine is not None
        async with engine.connect() as conn:
            await conn.execute(insert(items).values(id=1, name="rolled back by SQLAlchemy"))
        assert not _locked(path)
        # A transaction SQLAlchemy does not know of: only the pool's check-in
        # can end it (its rollback is replaced by one that runs when needed).
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            async with driver.execute("BEGIN IMMEDIATE"):
                pass
            async with driver.execute("INSERT INTO items (id, name) VALUES (2, 'raw')"):
                pass
            assert _locked(path)
        assert not _locked(path)
        async with database.connect() as conn:
            assert await conn.scalar(select(items.c.name)) is None


async def test_a_connection_closed_underneath_goes_back_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Target(f"sqlite://{tmp_path}/orders.db", {}).opened() as database:
        engine = database._engine
        assert engine is not None
        async with engine.connect() as conn:
            await (await conn.get_raw_connection()).driver_connection.close()
        # The check-in's "is a transaction open?" must not fail on it (SQLAlchemy
        # would log the error and throw the connection away).
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_missing_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # what an absent package looks like
    with pytest.raises(ConfigError, match=r"pip install 'flotilla-mesh\[postgres\]'"):
        create_engine(normalize_url("postgresql://app:pw@db/x"), {}, 5.0)


def test_a_bad_engine_option_is_a_config_error_naming_the_url() -> None:
    with pytest.raises(ConfigError, match=r"app:\*\*\*@db/x.*bad engine option"):
        create_engine(normalize_url("postgresql://app:pw@db/x"), {"no_such_option": 1}, 5.0)


def test_reason_names_the_driver_error_without_the_sql() -> None:
    wrapped = IntegrityError("INSERT INTO secret_table VALUES (1)", {}, ValueError("dup key"))
    assert reason(wrapped) == "ValueError: dup key"
    assert reason(TimeoutError()) == "timed out"


async def test_a_schema_option_puts_every_table_in_that_schema_made_if_missing() -> None:
    url = require(POSTGRES)
    schema = unique_name("schema").lower()
    try:
        # Two services' tables on one server database, each in a schema of its own.
        for service in ("orders", "users"):
            database = Database(f"{url}?schema={schema}_{service}", metadata=metadata)
            await database.open()
            try:
                async with database.connect() as conn:
                    await conn.execute(insert(items).values(name=service))
            finally:
                await database.aclose()
        # Read apart, on a plain connection (a Database would migrate the default schema).
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            found = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema LIKE $1 ORDER BY 1, 2",
                f"{schema}%",
            )
            stored = await conn.fetch(f'SELECT name FROM "{schema}_orders".items')
        finally:
            await conn.close()
        names = ("flotilla_inbox", "flotilla_outbox", "flotilla_schema", "items")
        assert [tuple(row) for row in found] == [
            (f"{schema}_{service}", name) for service in ("orders", "users") for name in names
        ]
        assert [row["name"] for row in stored] == ["orders"]
    finally:
        for service in ("orders", "users"):
            await postgres_execute(f'DROP SCHEMA IF EXISTS "{schema}_{service}" CASCADE')

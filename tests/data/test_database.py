"""A service's database: declared on the class, bound per service object, opened, checked."""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest
from sqlalchemy import text
from tests.data.conftest import Target, metadata
from tests.servers import POSTGRES_URL, postgres_execute, require_server

from flotilla import Service
from flotilla.data import Database, DatabasePolicy, databases_of
from flotilla.data.policy import Backoff
from flotilla.errors import ConfigError, Unavailable

# Nothing listens on port 1: connecting fails at once, as a server that is down does.
DOWN = "postgresql://app:hunter2@127.0.0.1:1/shop"
QUICK = DatabasePolicy(connect_timeout=2.0, reconnect=Backoff(base=0.05, max=0.2))


class Orders(Service, name="orders"):
    db = Database(metadata=metadata)


def test_each_service_object_gets_its_own_database_named_after_it() -> None:
    first, second = Orders(), Orders()
    assert first.db is first.db
    assert first.db is not second.db
    assert first.db.source == "orders"
    assert first.db.metadata is metadata
    assert isinstance(Orders.db, Database)  # on the class: the declaration
    assert databases_of(first) == [first.db]


def test_databases_of_a_service_without_one_is_empty() -> None:
    class Plain(Service, name="plain"):
        pass

    assert databases_of(Plain()) == []


async def test_a_memory_database_is_one_database_for_every_connection() -> None:
    async with Target("sqlite://", {}).opened() as database:
        async with database.connect() as conn:
            await conn.execute(text("INSERT INTO items (name) VALUES ('a')"))
        async with database.connect() as conn:  # another checkout, the same data
            assert await conn.scalar(text("SELECT count(*) FROM items")) == 1


async def test_an_unreachable_database_raises_unavailable_naming_the_url_masked() -> None:
    database = Database(DOWN, policy=QUICK)
    with pytest.raises(Unavailable) as caught:
        await database.open()
    assert "postgresql+asyncpg://app:***@127.0.0.1:1/shop" in caught.value.message
    assert "hunter2" not in caught.value.message
    assert not database.ready


async def test_in_the_background_it_is_not_ready_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = Database(DOWN, policy=QUICK, source="orders")
    with caplog.at_level(logging.WARNING, "flotilla.data"):
        await database.open(background=True)  # does not raise
        try:
            with pytest.raises(Unavailable, match=r"app:\*\*\*@127.0.0.1:1/shop is not ready"):
                await database.check()
            with pytest.raises(Unavailable, match="not ready"):
                async with database.transaction():
                    pass
            await asyncio.sleep(0.3)  # several attempts, at the policy's pace
        finally:
            await database.aclose()
    warnings = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1  # once per distinct failure, not once per attempt
    assert "hunter2" not in caplog.text


async def test_in_the_background_it_becomes_ready_once_the_database_exists() -> None:
    require_server("PostgreSQL", POSTGRES_URL)
    name = f"flotilla_late_{secrets.token_hex(4)}"
    base = POSTGRES_URL.rsplit("/", 1)[0]
    database = Database(f"{base}/{name}", metadata=metadata, policy=QUICK)
    await database.open(background=True)
    try:
        assert not database.ready  # no such database yet
        await postgres_execute(f'CREATE DATABASE "{name}"')
        await database.wait_ready(timeout=10)
        await database.check()
        async with database.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM items")) == 0  # migrated
    finally:
        await database.aclose()
        await postgres_execute(f'DROP DATABASE IF EXISTS "{name}"')


async def test_an_unknown_scheme_fails_at_open_even_in_the_background() -> None:
    with pytest.raises(ConfigError, match="unknown scheme"):
        await Database("mongodb://db/x").open(background=True)


async def test_a_database_opens_once() -> None:
    async with Target("sqlite://", {}).opened() as database:
        with pytest.raises(RuntimeError, match="already open"):
            await database.open()


async def test_aclose_is_idempotent() -> None:
    database = Database("sqlite://")
    await database.open()
    await database.aclose()
    await database.aclose()
    with pytest.raises(Unavailable):
        await database.check()

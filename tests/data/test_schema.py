"""Flotilla's tables and the migration run when a database opens."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, select, text, update
from tests.data.conftest import Target

from flotilla.data import schema
from flotilla.data.schema import SCHEMA_VERSION, schema_versions
from flotilla.errors import ConfigError


async def _version(target: Target) -> int:
    async with target.opened() as database, database.connect() as conn:
        return int(await conn.scalar(select(schema_versions.c.version)) or 0)


async def test_a_new_database_gets_every_table_and_the_current_version(target: Target) -> None:
    async with target.opened() as database, database.connect() as conn:
        names = await conn.run_sync(lambda sync: sync.dialect.get_table_names(sync))
        version = await conn.scalar(select(schema_versions.c.version))
    assert {"items", "flotilla_outbox", "flotilla_inbox", "flotilla_schema"} <= set(names)
    assert version == SCHEMA_VERSION


async def test_opening_again_keeps_data_and_version(target: Target) -> None:
    async with target.opened() as database, database.connect() as conn:
        await conn.execute(text("INSERT INTO items (name) VALUES ('kept')"))
    async with target.opened() as database, database.connect() as conn:
        assert await conn.scalar(text("SELECT name FROM items")) == "kept"
    assert await _version(target) == SCHEMA_VERSION


async def test_an_older_version_is_upgraded_step_by_step(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with target.opened() as database, database.connect() as conn:
        await conn.execute(update(schema_versions).values(version=SCHEMA_VERSION - 1))
    ran: list[int] = []

    def step(connection: Connection) -> None:
        ran.append(SCHEMA_VERSION - 1)

    monkeypatch.setitem(schema.UPGRADES, SCHEMA_VERSION - 1, step)
    assert await _version(target) == SCHEMA_VERSION
    assert ran == [SCHEMA_VERSION - 1]


async def test_a_newer_version_is_refused_rather_than_misread(target: Target) -> None:
    async with target.opened() as database, database.connect() as conn:
        await conn.execute(update(schema_versions).values(version=SCHEMA_VERSION + 1))
    with pytest.raises(ConfigError, match="newer than this Flotilla"):
        async with target.opened():
            pass

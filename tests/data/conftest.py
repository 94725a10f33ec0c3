"""Fixtures of the data tests: a database of each kind (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table
from tests.servers import postgres_schema  # noqa: F401 - a fixture

from flotilla.data import Database

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)


class Target(msgspec.Struct, frozen=True):
    """Where a test's databases live: a URL and the engine options that isolate it."""

    url: str
    engine_options: dict[str, Any]

    @asynccontextmanager
    async def opened(self, source: str = "orders", **options: Any) -> AsyncIterator[Database]:
        database = Database(
            self.url,
            metadata=metadata,
            engine_options=self.engine_options,
            source=source,
            **options,
        )
        await database.open()
        try:
            yield database
        finally:
            await database.aclose()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    """Each data test runs on an SQLite file and on a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return Target(f"sqlite://{tmp_path}/orders.db", {})
    url, schema = request.getfixturevalue("postgres_schema")
    return Target(url, {"connect_args": {"server_settings": {"search_path": schema}}})


@pytest.fixture
def postgres_target(postgres_schema: tuple[str, str]) -> Target:  # noqa: F811
    url, schema = postgres_schema
    return Target(url, {"connect_args": {"server_settings": {"search_path": schema}}})

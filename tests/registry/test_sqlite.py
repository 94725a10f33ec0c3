"""What only the SQLite registry has to get right: its file, old files, bad rows, healing."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from flotilla.clock import SystemClock
from flotilla.errors import Unavailable
from flotilla.registry import Health, Instance, SqliteRegistry
from flotilla.runtime.lease import LeaseKeeper

POLL = 0.05
WAIT = 5.0


def inst(id: str, **kw: Any) -> Instance:
    return Instance(id=id, service="svc", address="127.0.0.1:9000", **kw)


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[SqliteRegistry]:
    registry = SqliteRegistry(tmp_path / "registry.db", poll_interval=POLL)
    yield registry
    await registry.aclose()


async def until_listed(registry: SqliteRegistry, ids: list[str]) -> None:
    async with asyncio.timeout(WAIT), aclosing(registry.watch()) as updates:
        async for snapshot in updates:
            if [i.id for i in snapshot] == ids:
                return


async def test_deleted_files_heal_through_the_lease_keeper(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    registry = SqliteRegistry(path, poll_interval=POLL)
    keeper = LeaseKeeper(
        registry,
        lambda: [inst("a"), inst("b")],
        ttl=1.0,
        interval=0.1,
        health=None,
        clock=SystemClock(),
    )
    await keeper.start()
    try:
        for suffix in ["", "-wal", "-shm"]:
            os.unlink(f"{path}{suffix}")
        # A process that opens the file afresh sees the new one, empty at first,
        # then the instances again once a beat found its lease gone.
        fresh = SqliteRegistry(path, poll_interval=POLL)
        try:
            await until_listed(fresh, ["a", "b"])
        finally:
            await fresh.aclose()
    finally:
        await keeper.stop()
        await registry.aclose()


async def test_an_old_schema_file_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    with sqlite3.connect(path) as conn:  # the layout before leases had a table
        conn.execute(
            "CREATE TABLE instances (id TEXT PRIMARY KEY, service TEXT, address TEXT,"
            " version TEXT, health TEXT, metadata TEXT, ttl REAL, expires_at REAL)"
        )
        conn.execute(
            "INSERT INTO instances VALUES ('old', 's', 'h:1', '0', 'healthy', '{}', 9, 9e99)"
        )
    registry = SqliteRegistry(path)
    try:
        assert await registry.list() == []
        lease = await registry.grant(60)
        await registry.register(inst("a"), lease=lease)
        assert await registry.list() == [inst("a")]
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    ("column", "value"),
    [("health", "sideways"), ("metadata", "{not json"), ("methods", '[{"nom": 1}]')],
)
async def test_a_row_that_does_not_decode_is_left_out_with_one_warning(
    registry: SqliteRegistry, caplog: pytest.LogCaptureFixture, column: str, value: str
) -> None:
    lease = await registry.grant(60)
    await registry.register(inst("bad"), lease=lease)
    await registry.register(inst("good"), lease=lease)
    with sqlite3.connect(registry.path) as conn:  # a writer that got it wrong
        conn.execute(f"UPDATE instances SET {column} = ? WHERE id = 'bad'", (value,))
    for _ in range(3):
        assert await registry.list() == [inst("good")]
    async with asyncio.timeout(WAIT):
        async for snapshot in registry.watch():
            assert snapshot == [inst("good")]
            break
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'bad'" in warnings[0]


async def test_a_corrupted_file_is_unavailable_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    path.write_bytes(b"\x00garbage" * 1000)
    registry = SqliteRegistry(path)
    try:
        with pytest.raises(Unavailable, match=f"registry {path} cannot be used"):
            await registry.list()
        with pytest.raises(Unavailable, match="cannot be used"):
            await registry.grant(60)
    finally:
        await registry.aclose()


async def test_watch_sees_a_write_of_its_own_registry_and_of_another(
    registry: SqliteRegistry,
) -> None:
    # The watch skips reading when nothing could have changed: its own writes
    # and another connection's must both count as a change.
    other = SqliteRegistry(registry.path, poll_interval=POLL)
    try:
        async with asyncio.timeout(WAIT), aclosing(registry.watch()) as updates:
            assert await anext(updates) == []
            lease = await registry.grant(60)
            await registry.register(inst("a"), lease=lease)
            assert await anext(updates) == [inst("a")]
            await other.set_health("a", Health.HEALTHY)
            assert await anext(updates) == [inst("a", health=Health.HEALTHY)]
    finally:
        await other.aclose()

"""SqliteWorker: one thread per file, private modes, a versioned schema, failures as Unavailable."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from flotilla.errors import FailedPrecondition, Unavailable
from flotilla.sqlite_worker import Schema, SqliteWorker, transaction


def no_upgrade(conn: sqlite3.Connection, version: int) -> None:
    raise AssertionError(f"no upgrade expected, got version {version}")


SCHEMA = Schema(
    version=1,
    statements=("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT)",),
    upgrade=no_upgrade,
)


def insert(text: str) -> object:
    def work(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO notes (text) VALUES (?)", (text,))

    return work


def texts(conn: sqlite3.Connection) -> list[str]:
    return [text for (text,) in conn.execute("SELECT text FROM notes ORDER BY id")]


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[SqliteWorker]:
    worker = SqliteWorker(tmp_path / "notes.db", SCHEMA, what="notebook")
    yield worker
    await worker.aclose()


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_runs_work_on_one_connection_and_keeps_order(worker: SqliteWorker) -> None:
    for text in ["one", "two", "three"]:
        await worker.run(insert(text))  # type: ignore[arg-type]
    assert await worker.run(texts) == ["one", "two", "three"]


async def test_transaction_rolls_back_on_error(worker: SqliteWorker) -> None:
    def fails(conn: sqlite3.Connection) -> None:
        with transaction(conn):
            conn.execute("INSERT INTO notes (text) VALUES ('kept?')")
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await worker.run(fails)
    assert await worker.run(texts) == []
    assert await worker.run(lambda conn: conn.in_transaction) is False


async def test_files_are_private_whatever_the_umask(tmp_path: Path, umask_zero: None) -> None:
    path = tmp_path / "new" / "dir" / "notes.db"
    worker = SqliteWorker(path, SCHEMA)
    try:
        await worker.run(insert("x"))  # type: ignore[arg-type]
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
        assert mode(path.parent.parent) == 0o700
        for suffix in ["-wal", "-shm"]:
            assert mode(Path(f"{path}{suffix}")) == 0o600
    finally:
        await worker.aclose()


async def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    worker = SqliteWorker(path, SCHEMA)
    await worker.run(texts)
    await worker.aclose()
    assert mode(path) == 0o640


async def test_garbage_file_is_unavailable_naming_path_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(os.urandom(8192))
    worker = SqliteWorker(path, SCHEMA, what="notebook")
    try:
        with pytest.raises(Unavailable, match=f"notebook {path} cannot be used: .*not a database"):
            await worker.run(texts)
        with pytest.raises(Unavailable):  # and again: no half-open connection left behind
            await worker.run(texts)
    finally:
        await worker.aclose()


async def test_a_path_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    # A file where a directory should be stops root as well as anyone.
    (tmp_path / "plain-file").write_text("not a directory")
    path = tmp_path / "plain-file" / "notes.db"
    worker = SqliteWorker(path, SCHEMA, what="notebook")
    try:
        with pytest.raises(Unavailable, match=f"notebook {path} cannot be used: Not a directory"):
            await worker.run(texts)
    finally:
        await worker.aclose()


async def test_a_read_only_connection_fails_writes_as_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    worker = SqliteWorker(path, SCHEMA)
    await worker.run(insert("x"))  # type: ignore[arg-type]

    def write_read_only(conn: sqlite3.Connection) -> None:
        # What a file mounted read-only does, root or not.
        conn.execute("PRAGMA query_only = ON")
        conn.execute("INSERT INTO notes (text) VALUES ('y')")

    try:
        with pytest.raises(Unavailable, match=r"cannot be used: .*readonly"):
            await worker.run(write_read_only)
        assert await worker.run(texts) == ["x"]  # a fresh connection after the failure
    finally:
        await worker.aclose()


async def test_a_removed_file_is_reopened_with_its_schema(worker: SqliteWorker) -> None:
    await worker.run(insert("before"))  # type: ignore[arg-type]
    opened = worker.opened
    for suffix in ["", "-wal", "-shm"]:
        os.unlink(f"{worker.path}{suffix}")
    assert await worker.run(texts) == []  # the new, empty file: not the deleted one
    await worker.run(insert("after"))  # type: ignore[arg-type]
    assert worker.opened == opened + 1
    with sqlite3.connect(worker.path) as other:  # another process sees what we wrote
        assert texts(other) == ["after"]


async def test_a_replaced_file_is_reopened(worker: SqliteWorker, tmp_path: Path) -> None:
    await worker.run(insert("old"))  # type: ignore[arg-type]
    other = SqliteWorker(tmp_path / "other.db", SCHEMA)
    await other.run(insert("new"))  # type: ignore[arg-type]
    await other.aclose()  # the last connection folds its WAL into the file
    # A restore: the live files moved aside (the WAL with them: a database file
    # must never be swapped under its own WAL), another file put in place.
    for suffix in ["", "-wal", "-shm"]:
        os.rename(f"{worker.path}{suffix}", f"{tmp_path}/aside{suffix}")
    os.replace(tmp_path / "other.db", worker.path)
    assert await worker.run(texts) == ["new"]


async def test_old_versions_are_upgraded_newer_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    with sqlite3.connect(path) as conn:  # a file from before versioning
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")  # no text column
    upgraded: list[int] = []

    def upgrade(conn: sqlite3.Connection, version: int) -> None:
        upgraded.append(version)
        conn.execute("DROP TABLE notes")

    worker = SqliteWorker(path, Schema(2, SCHEMA.statements, upgrade))
    await worker.run(insert("x"))  # type: ignore[arg-type]
    await worker.aclose()
    assert upgraded == [0]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)

    older = SqliteWorker(path, SCHEMA, what="notebook")  # knows only version 1
    with pytest.raises(Unavailable, match="newer version"):
        await older.run(texts)
    await older.aclose()


async def test_a_fresh_file_needs_no_upgrade(worker: SqliteWorker) -> None:
    assert await worker.run(lambda conn: conn.execute("PRAGMA user_version").fetchone()) == (1,)


async def test_closed_worker_refuses_work_and_close_is_idempotent(worker: SqliteWorker) -> None:
    await worker.run(texts)
    await worker.aclose()
    await worker.aclose()
    assert worker.closed
    with pytest.raises(FailedPrecondition, match="closed"):
        await worker.run(texts)

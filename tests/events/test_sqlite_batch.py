"""Group work: concurrent callers share one trip; a cancelled caller cancels nobody's."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flotilla.errors import Unavailable
from flotilla.events.sqlite_batch import GroupCall, GroupCommit
from flotilla.sqlite_worker import Schema, SqliteWorker

SCHEMA = Schema(
    version=1, statements=("CREATE TABLE IF NOT EXISTS t (n INTEGER)",), upgrade=lambda c, v: None
)


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[SqliteWorker]:
    worker = SqliteWorker(tmp_path / "b.db", SCHEMA)
    yield worker
    await worker.aclose()


class Recorder:
    """A write that records its batches; ``gate`` holds the worker thread while it is clear."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()  # a write is running on the worker thread
        self.gate = threading.Event()
        self.gate.set()

    def write(self, conn: sqlite3.Connection, items: list[int]) -> None:
        self.started.set()
        self.gate.wait(5.0)
        if -1 in items:
            raise sqlite3.DatabaseError("disk I/O error")
        conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in items])
        self.batches.append(list(items))


async def test_a_lone_caller_writes_at_once(worker: SqliteWorker) -> None:
    recorder = Recorder()
    commit = GroupCommit(worker, recorder.write)
    await commit.add(1)
    await commit.add(2)
    assert recorder.batches == [[1], [2]]


async def test_callers_that_arrive_during_a_write_share_the_next(worker: SqliteWorker) -> None:
    recorder = Recorder()
    commit = GroupCommit(worker, recorder.write)
    recorder.gate.clear()  # the first write holds the worker thread, sealed with 0 alone
    first = asyncio.ensure_future(commit.add(0))
    assert await asyncio.to_thread(recorder.started.wait, 5.0)
    others = [asyncio.ensure_future(commit.add(n)) for n in range(1, 6)]
    recorder.gate.set()
    await asyncio.gather(first, *others)
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]  # not five more commits


async def test_a_cancelled_caller_does_not_cancel_the_others_write(worker: SqliteWorker) -> None:
    recorder = Recorder()
    commit = GroupCommit(worker, recorder.write)
    recorder.gate.clear()
    leader = asyncio.ensure_future(commit.add(1))
    follower = asyncio.ensure_future(commit.add(2))
    assert await asyncio.to_thread(recorder.started.wait, 5.0)
    leader.cancel()
    recorder.gate.set()
    await follower
    assert recorder.batches == [[1, 2]]  # written, the cancelled caller's item too
    with pytest.raises(asyncio.CancelledError):
        await leader
    await commit.drain()


async def test_a_failed_write_fails_every_caller_of_its_batch(worker: SqliteWorker) -> None:
    commit = GroupCommit(worker, Recorder().write)
    results = await asyncio.gather(commit.add(-1), commit.add(2), return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results), results
    await commit.add(3)  # the next batch is a new one


async def test_each_caller_of_a_shared_call_gets_its_own_result(worker: SqliteWorker) -> None:
    pieces: list[list[int]] = []

    def square(conn: sqlite3.Connection, items: list[int]) -> list[int]:
        pieces.append(list(items))
        return [n * n for n in items]

    call: GroupCall[int, int] = GroupCall(worker, square)
    results = await asyncio.gather(*(call.call(n) for n in range(1, 5)))
    assert results == [1, 4, 9, 16]
    assert pieces == [[1, 2, 3, 4]]  # asked in one loop iteration: one trip for all

"""The change watch: another connection's commit wakes waiters, with a backstop when blind."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from flotilla.events.sqlite_wake import ChangeWatch
from flotilla.testing import wait_for

WAIT = 5.0


@contextmanager
def wal_file(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (n INTEGER)")
        yield conn
    finally:
        conn.close()


@asynccontextmanager
async def watching(watch: ChangeWatch) -> AsyncIterator[ChangeWatch]:
    task = asyncio.ensure_future(watch.run())
    try:
        yield watch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def settled(watch: ChangeWatch) -> int:
    """The generation once the watch has read the file as it is now."""
    # The first read counts as a change: wait for it, however slow the machine.
    await wait_for(lambda: watch.generation > 0, timeout=WAIT)
    return watch.generation


async def test_a_commit_by_another_connection_wakes_waiters(tmp_path: Path) -> None:
    with wal_file(tmp_path / "e.db") as conn:
        # A backstop of a minute: only the wal-index header can explain a wake-up.
        async with watching(ChangeWatch(tmp_path / "e.db", backstop=60.0)) as watch:
            before = await settled(watch)
            await asyncio.sleep(0.05)
            assert watch.generation == before  # nothing committed: nothing seen
            waiter = asyncio.ensure_future(watch.wait(before))
            conn.execute("INSERT INTO t VALUES (1)")
            await asyncio.wait_for(waiter, WAIT)
            assert watch.generation > before


async def test_without_a_file_the_backstop_still_wakes(tmp_path: Path) -> None:
    async with watching(ChangeWatch(tmp_path / "none.db", backstop=0.05)) as watch:
        await asyncio.wait_for(watch.wait(watch.generation), WAIT)


async def test_poke_wakes_at_once_and_a_moved_generation_does_not_wait(tmp_path: Path) -> None:
    watch = ChangeWatch(tmp_path / "e.db")  # not running: only pokes move it
    waiter = asyncio.ensure_future(watch.wait(watch.generation))
    await asyncio.sleep(0)
    assert not waiter.done()
    watch.poke()
    await asyncio.wait_for(waiter, WAIT)
    await asyncio.wait_for(watch.wait(watch.generation - 1), WAIT)  # already past: returns

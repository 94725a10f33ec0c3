"""Group commit: what concurrent callers ask to write goes to the file in one transaction.

A commit costs far more than a row, and the worker thread does one piece of
work at a time, so the rows that arrive while one write runs wait for it
anyway: they are gathered into the next write, which takes them all.  A
caller alone pays one commit, as before; sixty-four concurrent acks pay one
or two.

    add(item) ─► open batch? ── no ──► open one, start its write (a task) ─┐
                      │                                                    │
                      └─ yes ──► join it ───────────────────────────────────┴─► await the write

The write *seals* its batch when it starts on the worker thread; items added
later open the next one.  Every caller awaits the write through
:func:`asyncio.shield`: a caller cancelled while it waits does not cancel
the others' write.  The writes in flight are owned here and awaited by
:meth:`GroupCommit.drain`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from flotilla.sqlite_worker import SqliteWorker

__all__ = ["GroupCommit"]

T = TypeVar("T")


class _Batch(Generic[T]):
    __slots__ = ("items", "write")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.write: asyncio.Task[None] | None = None


class GroupCommit(Generic[T]):
    """Writes the items of concurrent :meth:`add` calls together with ``write(conn, items)``."""

    def __init__(
        self, worker: SqliteWorker, write: Callable[[sqlite3.Connection, list[T]], None]
    ) -> None:
        self._worker = worker
        self._write = write
        self._lock = threading.Lock()  # the open batch is sealed on the worker thread
        self._open: _Batch[T] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    async def add(self, item: T) -> None:
        """Return once ``item`` is written (committed); raise what the write raised."""
        with self._lock:
            batch = self._open
            lead = batch is None
            if batch is None:
                batch = self._open = _Batch()
            batch.items.append(item)
        if lead:
            write = asyncio.get_running_loop().create_task(
                self._worker.run(partial(self._seal_and_write, batch=batch))
            )
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
            batch.write = write
        assert batch.write is not None  # set by the leader before any await
        await asyncio.shield(batch.write)

    async def drain(self) -> None:
        """Wait for every write in flight (their failures are their callers' to see)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def _seal_and_write(self, conn: sqlite3.Connection, batch: _Batch[T]) -> None:
        # On the worker thread.  A retry (busy) comes here again: sealed already.
        with self._lock:
            if self._open is batch:
                self._open = None
        self._write(conn, batch.items)

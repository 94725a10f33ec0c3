"""Group work: what concurrent callers ask of the file goes to the worker thread in one piece.

A commit costs far more than a row, and a trip to the worker thread costs
two thread switches, and the worker thread does one piece of work at a
time, so the items that arrive while one piece runs wait for it anyway:
they are gathered into the next piece, which takes them all.  A caller
alone pays one trip, as before; sixty-four concurrent acks pay one or two.

    call(item) ─► open batch? ── no ──► open one, start its work (a task) ─┐
                      │                                                    │
                      └─ yes ──► join it ───────────────────────────────────┴─► await the work

The work *seals* its batch when it starts on the worker thread; items added
later open the next one.  Every caller awaits the work through
:func:`asyncio.shield`: a caller cancelled while it waits does not cancel
the others' work.  The pieces in flight are owned here and awaited by
:meth:`GroupCall.drain`.  :class:`GroupCommit` is the writing kind (one
transaction, no results) built on :class:`GroupCall`, which gives each
caller its own result.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from flotilla.sqlite_worker import SqliteWorker

__all__ = ["GroupCall", "GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class _Batch(Generic[T, R]):
    __slots__ = ("items", "results", "work")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.results: list[R] = []
        self.work: asyncio.Task[None] | None = None


class GroupCall(Generic[T, R]):
    """Runs the items of concurrent :meth:`call` calls together with ``work(conn, items)``,
    which returns one result per item, in order."""

    def __init__(
        self, worker: SqliteWorker, work: Callable[[sqlite3.Connection, list[T]], list[R]]
    ) -> None:
        self._worker = worker
        self._work = work
        self._lock = threading.Lock()  # the open batch is sealed on the worker thread
        self._open: _Batch[T, R] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def call(self, item: T) -> R:
        """``item``'s result once the work is done (committed); raise what the work raised."""
        with self._lock:
            batch = self._open
            lead = batch is None
            if batch is None:
                batch = self._open = _Batch()
            index = len(batch.items)
            batch.items.append(item)
        if lead:
            work = asyncio.get_running_loop().create_task(
                self._worker.run(partial(self._seal_and_work, batch=batch))
            )
            self._running.add(work)
            work.add_done_callback(self._running.discard)
            batch.work = work
        assert batch.work is not None  # set by the leader before any await
        await asyncio.shield(batch.work)
        return batch.results[index]

    async def drain(self) -> None:
        """Wait for every piece of work in flight (their failures are their callers' to see)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _seal_and_work(self, conn: sqlite3.Connection, batch: _Batch[T, R]) -> None:
        # On the worker thread.  A retry (busy) comes here again: sealed already.
        with self._lock:
            if self._open is batch:
                self._open = None
        batch.results = self._work(conn, batch.items)


class GroupCommit(GroupCall[T, None]):
    """Writes the items of concurrent :meth:`add` calls together with ``write(conn, items)``."""

    def __init__(
        self, worker: SqliteWorker, write: Callable[[sqlite3.Connection, list[T]], None]
    ) -> None:
        def work(conn: sqlite3.Connection, items: list[T]) -> list[None]:
            write(conn, items)
            return [None] * len(items)

        super().__init__(worker, work)

    async def add(self, item: T) -> None:
        """Return once ``item`` is written (committed); raise what the write raised."""
        await self.call(item)

"""The embedded registry: one SQLite file shared by the processes of one machine.

No server: every process opens the same file.  WAL mode lets readers go on
while one writer commits, and the busy timeout makes a writer wait its turn
instead of failing; every write is one short transaction.  Leases expire by
the wall clock (``clock.time()``), which all processes on a machine share, so
a row whose ``expires_at`` passed is gone for every reader, even when the
process that owned it was killed and never deregistered.

A registry owns one worker thread, and that thread owns the connection:
a ``sqlite3`` connection must not be used from two threads at once, and a
single thread also keeps this registry's statements in the order they were
issued.  Watchers poll, because SQLite cannot notify another process.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import msgspec

from flotilla.aio import wait_first
from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConfigError, FailedPrecondition, NotFound
from flotilla.registry.base import Health, Instance, check_ttl

__all__ = ["SqliteRegistry"]

_T = TypeVar("_T")

# How long a statement waits for another process's write lock (busy_timeout).
# Writes hold it for well under a millisecond, so 5 s means something is stuck.
_BUSY_TIMEOUT = 5.0
# What the busy timeout does not cover (a WAL recovery or journal-mode switch
# racing at open, a snapshot made stale by another writer) is retried this many
# times with a doubling pause from _RETRY_PAUSE.  Real time, not the Clock:
# this waits for another process's I/O, not for a lease.
_RETRIES = 5
_RETRY_PAUSE = 0.01

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id         TEXT PRIMARY KEY,
    service    TEXT NOT NULL,
    address    TEXT NOT NULL,
    version    TEXT NOT NULL,
    health     TEXT NOT NULL,
    metadata   TEXT NOT NULL,  -- JSON object, str -> str
    ttl        REAL NOT NULL,
    expires_at REAL NOT NULL   -- clock.time(); live while expires_at > now
);
CREATE INDEX IF NOT EXISTS instances_by_service ON instances (service, id);
"""
_SELECT = "SELECT id, service, address, version, health, metadata FROM instances"
_PLACES = ", ".join("?" * 8)  # one per column of the table
_Row = tuple[str, str, str, str, str, str]

_decode_metadata = msgspec.json.Decoder(dict[str, str]).decode


class SqliteRegistry:
    """A :class:`~flotilla.registry.base.Registry` in one SQLite file (one machine, many processes).

    The file and its parent directory are created on first use.  ``watch``
    re-reads the live set every ``poll_interval`` seconds of ``clock`` and
    yields when it differs from the last snapshot.
    """

    def __init__(
        self, path: str | Path, *, clock: Clock | None = None, poll_interval: float = 0.2
    ) -> None:
        if not poll_interval > 0:
            raise ConfigError(f"poll_interval must be positive, not {poll_interval!r}")
        self.path = Path(path)
        self._clock: Clock = clock or SystemClock()
        self._poll_interval = poll_interval
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flotilla-sqlite")
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread
        self._closed = False
        self._closing = asyncio.Event()  # wakes polling watchers at aclose

    async def register(self, instance: Instance, *, ttl: float) -> None:
        """Add or replace ``instance`` with a lease of ``ttl`` seconds."""
        check_ttl(ttl)
        now = self._clock.time()
        row = (
            instance.id,
            instance.service,
            instance.address,
            instance.version,
            instance.health.value,
            msgspec.json.encode(instance.metadata).decode(),
            ttl,
            now + ttl,
        )

        def write(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                # Rows of processes that died without deregistering are
                # collected here, on a write that takes the lock anyway.
                conn.execute("DELETE FROM instances WHERE expires_at <= ?", (now,))
                conn.execute(f"INSERT OR REPLACE INTO instances VALUES ({_PLACES})", row)

        await self._run(write)

    async def heartbeat(self, instance_id: str, *, health: Health | None = None) -> None:
        """Renew the lease for its ttl and optionally change the health.

        Raises :class:`~flotilla.errors.NotFound` when the lease already ran
        out or the id is unknown.
        """
        now = self._clock.time()
        health_value = None if health is None else health.value

        def renew(conn: sqlite3.Connection) -> int:
            # One statement, so checking "still live" and renewing are atomic.
            cursor = conn.execute(
                "UPDATE instances SET expires_at = ? + ttl, health = coalesce(?, health)"
                " WHERE id = ? AND expires_at > ?",
                (now, health_value, instance_id, now),
            )
            return cursor.rowcount

        if await self._run(renew) == 0:
            raise NotFound(f"no live instance {instance_id!r} in the registry; register it again")

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance at once; an unknown id is not an error."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,))

        await self._run(delete)

    async def list(self, service: str | None = None) -> builtins.list[Instance]:
        """Live instances of ``service`` (or of all services), sorted by id."""
        now = self._clock.time()

        def select(conn: sqlite3.Connection) -> builtins.list[_Row]:
            if service is None:
                return conn.execute(
                    f"{_SELECT} WHERE expires_at > ? ORDER BY id", (now,)
                ).fetchall()
            return conn.execute(
                f"{_SELECT} WHERE service = ? AND expires_at > ? ORDER BY id", (service, now)
            ).fetchall()

        return [_instance(row) for row in await self._run(select)]

    async def watch(
        self, service: str | None = None
    ) -> AsyncGenerator[builtins.list[Instance], None]:
        """Yield the live instances now, then whenever a poll finds them changed.

        Changes between two polls are seen together: a watcher may miss an
        instance that came and went within one ``poll_interval``.  Ends on
        :meth:`aclose`.
        """
        last: builtins.list[Instance] | None = None
        # The check and the read below have no await between them, so a poll
        # is never sent to the worker after aclose shut it down.
        while not self._closed:
            snapshot = await self.list(service)
            if snapshot != last:
                last = snapshot
                yield builtins.list(snapshot)  # a copy: ``last`` must not change under us
            await wait_first(self._closing.wait(), self._clock.sleep(self._poll_interval))

    async def aclose(self) -> None:
        """Close the connection, stop the worker thread and end every watch; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        loop = asyncio.get_running_loop()
        try:
            # Queued behind any statement still running, so that one finishes first.
            await loop.run_in_executor(self._executor, self._close_connection)
        finally:
            self._executor.shutdown(wait=False)

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the worker thread.

        If the caller is cancelled, ``work`` still runs to its end (a thread
        cannot be interrupted); a write is then either wholly done or not at all.
        """
        if self._closed:
            raise FailedPrecondition("the registry is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_retries, work)

    def _with_retries(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        pause = _RETRY_PAUSE
        for _ in range(_RETRIES - 1):
            try:
                return work(self._connection())
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            time.sleep(pause)  # on the worker thread, never on the event loop
            pause *= 2
        return work(self._connection())

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; the ones we need
            # are opened explicitly by _transaction.
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a power loss may drop the last commits but never
                # corrupts the file; a lease lost that way is renewed within a ttl.
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front (waiting through busy_timeout);
    # a deferred transaction that reads before writing can fail with BUSY at
    # once, without waiting, when another process wrote in between.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "database is locked" in message or "database is busy" in message


def _instance(row: _Row) -> Instance:
    id_, service, address, version, health, metadata = row
    return Instance(
        id=id_,
        service=service,
        address=address,
        version=version,
        health=Health(health),
        metadata=_decode_metadata(metadata),
    )

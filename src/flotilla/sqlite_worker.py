"""One SQLite file used from asyncio: a worker thread that owns the connection.

The embedded backends (the registry, the event log) share a file between the
processes of one machine.  This module is what they have in common:

* **One thread, one connection.**  A ``sqlite3`` connection must not be used
  from two threads at once, and one thread also keeps a component's
  statements in the order they were issued.  ``await worker.run(fn)`` runs
  ``fn(conn)`` there; if the caller is cancelled, ``fn`` still runs to its end
  (a thread cannot be interrupted), so a write is wholly done or not at all.
* **Busy is waited out, not failed.**  WAL mode lets readers go on while one
  writer commits; the busy timeout makes a writer wait its turn.  What the
  timeout does not cover (a WAL recovery or journal-mode switch racing at
  open, a snapshot made stale by another writer) is retried a few times.
* **A file replaced or removed under a running process is reopened.**  Before
  each piece of work the path is ``stat``-ed (about a microsecond, against tens
  for the cheapest query, so it is done every time rather than on a timer) and
  compared with the file the connection has open.  Without this, a process
  keeps writing to a deleted file that nobody else can see: a split brain that
  never heals.  The reopened file gets its schema again.
* **Every failure that is not "busy" is** :class:`~flotilla.errors.Unavailable`,
  naming the file and the reason (garbage bytes, a path that cannot be
  created, a disk error), never a raw ``sqlite3`` traceback.  The connection
  is dropped, so the next piece of work opens the file afresh.
* **Private files.**  The database is created ``0600`` whatever the umask
  (SQLite gives its ``-wal`` and ``-shm`` the mode of the database file), and
  missing parent directories ``0700``: a registry names every address of a
  system and the event log holds its data.
* **A versioned schema.**  ``PRAGMA user_version`` holds :attr:`Schema.version`;
  a file of an older version goes through :attr:`Schema.upgrade` first, and a
  file of a newer one is refused rather than misread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from flotilla.errors import FailedPrecondition, Unavailable

__all__ = ["Schema", "SqliteWorker", "transaction"]

_T = TypeVar("_T")

# How long a statement waits for another process's write lock (busy_timeout).
# Writes hold it for well under a millisecond, so 5 s means something is stuck.
_BUSY_TIMEOUT = 5.0
# Real time, not a Clock: these wait for another process's I/O, not for a lease.
_RETRIES = 5
_RETRY_PAUSE = 0.01


@dataclass(frozen=True)
class Schema:
    """What a file must hold for a component to use it."""

    version: int
    """Stored in ``PRAGMA user_version``; a positive number, raised on every change."""
    statements: Sequence[str]
    """``CREATE ... IF NOT EXISTS`` statements that build the current version."""
    upgrade: Callable[[sqlite3.Connection, int], None]
    """Brings a file at an older version (0: one that predates versioning but
    holds tables) to a state where ``statements`` build the current one; runs
    inside the same transaction."""


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception.

    IMMEDIATE takes the write lock up front (waiting through busy_timeout); a
    deferred transaction that reads before writing can fail with BUSY at once,
    without waiting, when another process wrote in between.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        # SQLite has already rolled back after some errors (a full disk, say):
        # a second ROLLBACK would fail and hide the first error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteWorker:
    """The connection to one SQLite file, used from asyncio through one worker thread.

    Nothing touches the file before the first :meth:`run`.
    """

    def __init__(self, path: str | Path, schema: Schema, *, what: str = "database") -> None:
        self.path = Path(path)
        self._schema = schema
        self._what = what
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"flotilla-{what}")
        # Touched only on the worker thread:
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self.opened = 0
        """How many times the file was (re)opened: a reader's cached view of an
        earlier file is stale when this moved.  Read it on the worker thread."""
        self._closed = False

    transaction = staticmethod(transaction)
    """The same as the module's :func:`transaction`, for ``worker.transaction(conn)``."""

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran: no more work is accepted."""
        return self._closed

    async def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work(conn)`` on the worker thread, its result or its exception here.

        Raises :class:`~flotilla.errors.FailedPrecondition` once closed and
        :class:`~flotilla.errors.Unavailable` when the file cannot be used.
        """
        if self._closed:
            raise FailedPrecondition(f"the {self._what} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._with_retries, work)

    async def aclose(self) -> None:
        """Close the connection and stop the thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            # Queued behind any work still running, so that finishes first.
            await loop.run_in_executor(self._executor, self._drop_connection)
        finally:
            self._executor.shutdown(wait=False)

    # -- on the worker thread ------------------------------------------------------------

    def _with_retries(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        pause = _RETRY_PAUSE
        for attempt in range(_RETRIES):
            try:
                return work(self._connection())
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == _RETRIES - 1:
                    raise self._unavailable(exc) from None
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from None
            except OSError as exc:  # creating the directory or the file
                raise self._unavailable(exc) from None
            time.sleep(pause)  # on the worker thread, never on the event loop
            pause *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _unavailable(self, exc: BaseException) -> Unavailable:
        if not (isinstance(exc, sqlite3.OperationalError) and _is_busy(exc)):
            # Whatever state the connection is in, the next attempt starts afresh.
            self._drop_connection()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Unavailable(f"{self._what} {self.path} cannot be used: {reason}")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._identity == _identity(self.path):
            return self._conn
        self._drop_connection()  # never opened, or the file was replaced or removed
        self._create_file()
        # isolation_level=None: no implicit transactions; the ones needed are
        # opened explicitly by transaction().
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a power loss may drop the last commits but never
            # corrupts the file.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._apply_schema(conn)
            identity = _identity(self.path)
        except BaseException:
            conn.close()
            raise
        self._conn, self._identity = conn, identity
        self.opened += 1
        return conn

    def _create_file(self) -> None:
        if self.path.exists():
            return  # an existing file keeps the mode its owner gave it
        missing = [p for p in [self.path.parent, *self.path.parent.parents] if not p.exists()]
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process was first
                os.mkdir(directory, 0o700)
        # An empty file is a valid empty database; creating it here, not in
        # sqlite3.connect, is what makes its mode ours rather than the umask's.
        fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)

    def _apply_schema(self, conn: sqlite3.Connection) -> None:
        with transaction(conn):
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            if found == self._schema.version:
                return
            if found > self._schema.version:
                raise sqlite3.DatabaseError(
                    f"written by a newer version (schema {found}, this one knows up to "
                    f"{self._schema.version})"
                )
            has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
            if found or has_tables:
                self._schema.upgrade(conn, found)
            for statement in self._schema.statements:
                conn.execute(statement)
            # A pragma cannot take a parameter; the version is an int of ours.
            conn.execute(f"PRAGMA user_version = {int(self._schema.version)}")

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = self._identity = None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "database is locked" in message or "database is busy" in message

"""The embedded registry: one SQLite file shared by the processes of one machine.

No server: every process opens the same file through a
:class:`~flotilla.sqlite_worker.SqliteWorker` (one thread, WAL, busy waits,
reopening a replaced file, failures as ``Unavailable``).  Two tables: a lease
is a row of ``leases``; an instance is a row of ``instances`` naming its
lease.  A keepalive is one ``UPDATE`` of one lease row, however many
instances the lease covers.  Leases expire by the wall clock
(``clock.time()``), which all processes on a machine share, so the instances
of a lease whose ``expires_at`` passed are gone for every reader, even when
the process that owned it was killed and never revoked it.

The file holds nothing but leases, which their owners re-create within a
beat, so a file of an older schema is simply dropped and built again.

Watchers poll, because SQLite cannot notify another process.  A poll is
cheap when nothing changed: ``PRAGMA data_version`` (moved by any other
process's commit), a count of this registry's own writes and the earliest
expiry in view say whether anything could have; only then are the rows read,
and they are decoded only when they differ from the last ones.  A row that
cannot be decoded (written by a newer or broken writer) is left out, with one
warning per row id.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
import math
import secrets
import sqlite3
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from flotilla.aio import wait_first
from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConfigError, NotFound
from flotilla.registry.base import Health, Instance, MethodInfo, check_ttl, lease_not_found
from flotilla.sqlite_worker import Schema, SqliteWorker, transaction

__all__ = ["SqliteRegistry"]

log = logging.getLogger("flotilla.registry")

_T = TypeVar("_T")


def _drop_everything(conn: sqlite3.Connection, version: int) -> None:
    # Every row is a lease its owner renews within a beat: dropping an old
    # file's rows costs a re-registration, a migration would cost code.
    conn.execute("DROP TABLE IF EXISTS instances")
    conn.execute("DROP TABLE IF EXISTS leases")


SCHEMA = Schema(
    version=2,
    statements=(
        """CREATE TABLE IF NOT EXISTS leases (
            id         TEXT PRIMARY KEY,
            ttl        REAL NOT NULL,
            expires_at REAL NOT NULL  -- clock.time(); live while expires_at > now
        )""",
        """CREATE TABLE IF NOT EXISTS instances (
            id       TEXT PRIMARY KEY,
            service  TEXT NOT NULL,
            address  TEXT NOT NULL,
            version  TEXT NOT NULL,
            health   TEXT NOT NULL,
            metadata TEXT NOT NULL,  -- JSON object, str -> str
            methods  TEXT NOT NULL,  -- JSON array of MethodInfo
            lease    TEXT NOT NULL   -- leases.id; live while that lease is
        )""",
        "CREATE INDEX IF NOT EXISTS instances_by_service ON instances (service, id)",
        "CREATE INDEX IF NOT EXISTS instances_by_lease ON instances (lease)",
    ),
    upgrade=_drop_everything,
)

_SELECT = (
    "SELECT i.id, i.service, i.address, i.version, i.health, i.metadata, i.methods, l.expires_at"
    " FROM instances AS i JOIN leases AS l ON l.id = i.lease WHERE l.expires_at > ?"
)
_PLACES = ", ".join("?" * 8)  # one per column of instances
_Row = tuple[str, str, str, str, str, str, str, float]

_decode_metadata = msgspec.json.Decoder(dict[str, str]).decode
_decode_methods = msgspec.json.Decoder(tuple[MethodInfo, ...]).decode


class _View(msgspec.Struct):
    """What a watcher last read, and what says whether reading again could differ."""

    key: tuple[int, int, int] = (-1, -1, -1)  # (file opened, data_version, own writes)
    next_expiry: float = -math.inf
    rows: builtins.list[tuple[Any, ...]] | None = None  # None: not read yet


class SqliteRegistry:
    """A :class:`~flotilla.registry.base.Registry` in one SQLite file (one machine, many processes).

    The file and its parent directories are created on first use (``0600`` and
    ``0700``).  ``watch`` polls every ``poll_interval`` seconds of ``clock``
    and yields when the live set differs from the last snapshot.
    """

    def __init__(
        self, path: str | Path, *, clock: Clock | None = None, poll_interval: float = 0.2
    ) -> None:
        if not poll_interval > 0:
            raise ConfigError(f"poll_interval must be positive, not {poll_interval!r}")
        self._worker = SqliteWorker(path, SCHEMA, what="registry")
        self.path = self._worker.path
        self._clock: Clock = clock or SystemClock()
        self._poll_interval = poll_interval
        self._writes = 0  # this registry's own commits; touched only on the worker thread
        self._warned: set[str] = set()  # ids of rows that did not decode, warned once
        self._closing = asyncio.Event()  # wakes polling watchers at aclose

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> SqliteRegistry:
        """The registry for ``sqlite:///abs/path.db`` or ``sqlite://relative/path.db``."""
        from flotilla.resolve import sqlite_path

        return cls(sqlite_path(url), clock=clock)

    async def grant(self, ttl: float) -> str:
        """A new lease id, live for ``ttl`` seconds."""
        check_ttl(ttl)
        lease = secrets.token_hex(16)

        def write(conn: sqlite3.Connection) -> None:
            now = self._clock.time()  # when it runs: it may wait behind other work
            with transaction(conn):
                # The leases of processes that died without revoking are
                # collected here: a node starting is when the dead get replaced.
                conn.execute(
                    "DELETE FROM instances WHERE lease NOT IN"
                    " (SELECT id FROM leases WHERE expires_at > ?)",
                    (now,),
                )
                conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
                conn.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease, ttl, now + ttl))

        await self._write(write)
        return lease

    async def register(self, instance: Instance, *, lease: str) -> None:
        """Add or replace ``instance`` under ``lease``; :class:`NotFound` if it is not live."""
        row = (
            instance.id,
            instance.service,
            instance.address,
            instance.version,
            instance.health.value,
            msgspec.json.encode(instance.metadata).decode(),
            msgspec.json.encode(instance.methods).decode(),
            lease,
        )

        def write(conn: sqlite3.Connection) -> bool:
            now = self._clock.time()
            with transaction(conn):  # the check and the insert see the same lease
                live = conn.execute(
                    "SELECT 1 FROM leases WHERE id = ? AND expires_at > ?", (lease, now)
                ).fetchone()
                if live is not None:
                    conn.execute(f"INSERT OR REPLACE INTO instances VALUES ({_PLACES})", row)
                return live is not None

        if not await self._write(write):
            raise lease_not_found(lease)

    async def keepalive(self, lease: str) -> None:
        """Renew ``lease`` for its ttl; :class:`NotFound` when it expired or was revoked."""

        def renew(conn: sqlite3.Connection) -> int:
            # The time it runs, not when it was asked: a lease that expired
            # while this waited (behind other work, or busy retries) stays dead.
            now = self._clock.time()
            # One statement: checking "still live" and renewing are atomic.
            return conn.execute(
                "UPDATE leases SET expires_at = ? + ttl WHERE id = ? AND expires_at > ?",
                (now, lease, now),
            ).rowcount

        if await self._write(renew) == 0:
            raise lease_not_found(lease)

    async def set_health(self, instance_id: str, health: Health) -> None:
        """Change the instance's health; :class:`NotFound` when it is not live."""

        def update(conn: sqlite3.Connection) -> int:
            now = self._clock.time()
            return conn.execute(
                "UPDATE instances SET health = ? WHERE id = ?"
                " AND lease IN (SELECT id FROM leases WHERE expires_at > ?)",
                (health.value, instance_id, now),
            ).rowcount

        if await self._write(update) == 0:
            raise NotFound(f"no live instance {instance_id!r} in the registry; register it again")

    async def revoke(self, lease: str) -> None:
        """Remove ``lease`` and every instance under it; an unknown lease is not an error."""

        def delete(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM instances WHERE lease = ?", (lease,))
                conn.execute("DELETE FROM leases WHERE id = ?", (lease,))

        await self._write(delete)

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance at once; an unknown id is not an error."""

        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,))

        await self._write(delete)

    async def list(self, service: str | None = None) -> builtins.list[Instance]:
        """Live instances of ``service`` (or of all services), sorted by id."""
        now = self._clock.time()
        rows = await self._worker.run(lambda conn: _select(conn, service, now))
        return self._decode(rows)

    async def watch(
        self, service: str | None = None
    ) -> AsyncGenerator[builtins.list[Instance], None]:
        """Yield the live instances now, then whenever a poll finds them changed.

        Changes between two polls are seen together: a watcher may miss an
        instance that came and went within one ``poll_interval``.  Ends on
        :meth:`aclose`.
        """
        view = _View()
        last: builtins.list[Instance] | None = None
        # The check and the poll below have no await between them, so a poll
        # is never sent to the worker after aclose shut it down.
        while not self._worker.closed:
            refresh = functools.partial(self._refresh, view=view, service=service,
                                        now=self._clock.time())  # fmt: skip
            if await self._worker.run(refresh):
                snapshot = self._decode(view.rows or [])
                if snapshot != last:
                    last = snapshot
                    yield builtins.list(snapshot)  # a copy: ``last`` must not change under us
            await wait_first(self._closing.wait(), self._clock.sleep(self._poll_interval))

    async def aclose(self) -> None:
        """Close the connection, stop the worker thread and end every watch; idempotent."""
        self._closing.set()
        await self._worker.aclose()

    # -- helpers ----------------------------------------------------------------------------

    async def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        def counted(conn: sqlite3.Connection) -> _T:
            try:
                return work(conn)
            finally:
                # Our own commits do not move our connection's data_version:
                # watchers of this registry learn of them from this count.
                self._writes += 1

        return await self._worker.run(counted)

    def _refresh(
        self, conn: sqlite3.Connection, view: _View, service: str | None, now: float
    ) -> bool:
        """Bring ``view`` up to date (on the worker thread); whether its rows changed."""
        (data_version,) = conn.execute("PRAGMA data_version").fetchone()
        key = (self._worker.opened, data_version, self._writes)
        if key == view.key and now < view.next_expiry:
            return False  # no commit anywhere and no lease ran out: nothing can differ
        rows = _select(conn, service, now)
        view.key = key
        view.next_expiry = min((row[-1] for row in rows), default=math.inf)
        # Renewals move only expires_at: leave it out of the comparison.
        content = [row[:-1] for row in rows]
        if content == view.rows:
            return False
        view.rows = content
        return True

    def _decode(self, rows: builtins.list[tuple[Any, ...]]) -> builtins.list[Instance]:
        decoded = []
        for row in rows:
            id_, service, address, version, health, metadata, methods = row[:7]
            try:
                instance = Instance(
                    id=id_,
                    service=service,
                    address=address,
                    version=version,
                    health=Health(health),
                    metadata=_decode_metadata(metadata),
                    methods=_decode_methods(methods),
                )
            except (ValueError, TypeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                if id_ not in self._warned:
                    self._warned.add(id_)
                    log.warning("registry %s: instance %r left out, its row is bad: %s",
                                self.path, id_, exc)  # fmt: skip
                continue
            decoded.append(instance)
        return decoded


def _select(conn: sqlite3.Connection, service: str | None, now: float) -> builtins.list[_Row]:
    if service is None:
        return conn.execute(f"{_SELECT} ORDER BY i.id", (now,)).fetchall()
    return conn.execute(f"{_SELECT} AND i.service = ? ORDER BY i.id", (now, service)).fetchall()

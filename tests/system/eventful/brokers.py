"""The event backends the eventful system's tests run on, and how each is taken down.

* ``embedded``: the SQLite log ``events.db`` in the data directory.  It has no
  server to stop; another process holding its write lock is its outage (no
  publish or claim can commit until the lock is let go).
* ``nats``: the JetStream server of this machine, reached through a
  :class:`~tests.proxy.TcpProxy` the test cuts, with a stream prefix of the
  test's own (deleted after it).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

__all__ = ["Broker", "EmbeddedBroker"]


class Broker(Protocol):
    """Where the processes of a test publish and consume, and a way to make it unreachable."""

    name: str

    def url(self, data_dir: Path) -> str:
        """The ``FLOTILLA_EVENTS`` of every process of the test."""
        ...

    def down(self, data_dir: Path) -> contextlib.AbstractAsyncContextManager[None]:
        """Unreachable inside the block, back after it."""
        ...


class EmbeddedBroker:
    name = "embedded"

    def url(self, data_dir: Path) -> str:
        return f"sqlite:///{data_dir / 'events.db'}"

    @asynccontextmanager
    async def down(self, data_dir: Path) -> AsyncIterator[None]:
        db = sqlite3.connect(data_dir / "events.db", isolation_level=None, timeout=5.0)
        try:
            db.execute("BEGIN IMMEDIATE")  # the write lock: no publish, no claim commits
            yield
            db.execute("ROLLBACK")
        finally:
            db.close()

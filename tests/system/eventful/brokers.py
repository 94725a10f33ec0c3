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

from tests.proxy import TcpProxy

__all__ = ["Broker", "EmbeddedBroker", "NatsBroker"]


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


class NatsBroker:
    """JetStream through a proxy the test cuts; the test's own stream prefix (``prefix``)."""

    name = "nats"

    def __init__(self, proxy: TcpProxy, prefix: str) -> None:
        self.proxy = proxy
        self.prefix = prefix

    def url(self, data_dir: Path) -> str:
        # poll: how soon a subscription with nothing to do notices an ack_wait run out
        return f"nats://127.0.0.1:{self.proxy.port}?prefix={self.prefix}&poll=0.1"

    @asynccontextmanager
    async def down(self, data_dir: Path) -> AsyncIterator[None]:
        await self.proxy.cut()  # every connection closed, new ones refused
        try:
            yield
        finally:
            await self.proxy.restore()  # on the same port: the clients reconnect

"""The connection pool: one open connection per peer address, made on first use.

Concurrent first calls to an address share one connect; a connect or a
handshake that fails raises (``ConnectFailed``, ``HandshakeFailed``) and is
logged once per address per streak of failures, not once per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from flotilla.errors import (
    ConnectFailed,
    DeadlineExceeded,
    HandshakeFailed,
)
from flotilla.transport.client import Connection
from flotilla.transport.frames import DEFAULT_MAX_FRAME

__all__ = ["CONNECT_TIMEOUT", "ConnectionPool"]

log = logging.getLogger("flotilla.transport")

CONNECT_TIMEOUT = 2.0


class ConnectionPool:
    """Keeps one open connection per address; connects on first use."""

    def __init__(
        self,
        secret: bytes,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        connect_timeout: float = CONNECT_TIMEOUT,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.secret = secret
        self.max_frame = max_frame
        self.connect_timeout = connect_timeout
        self.on_lost = on_lost
        self._connections: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}
        # address -> reason of its current streak of failed handshakes, logged once.
        self._refusals: dict[str, str] = {}
        self._closed = False

    def connected(self, address: str) -> Connection | None:
        """The open connection to ``address``, if there is one (no waiting)."""
        connection = self._connections.get(address)
        return connection if connection is not None and connection.open else None

    async def get(self, address: str, *, deadline: float | None = None) -> Connection:
        """An open connection to ``address``; concurrent first calls share one connect.

        The wait is bounded by the pool's connect timeout and by ``deadline``
        (absolute, ``time.monotonic()``).  Raises ``ConnectFailed`` when no
        connection could be made, ``HandshakeFailed`` (a ``ConnectFailed``)
        when the handshake failed, ``DeadlineExceeded`` when ``deadline``
        passed first.  The call was never sent in every case; only the first
        two say so (``never_sent``): a passed deadline leaves no time to send
        it anywhere else.
        """
        connection = self.connected(address)
        if connection is not None:
            return connection
        if self._closed:
            raise ConnectFailed("connection pool is closed")
        connecting = self._connecting.get(address)
        if connecting is None:
            connecting = asyncio.ensure_future(self._connect(address))
            self._connecting[address] = connecting
            connecting.add_done_callback(lambda _: self._connecting.pop(address, None))
        # shield: one caller's deadline must not abort a connect others wait for.
        wait = None if deadline is None else deadline - time.monotonic()
        try:
            async with asyncio.timeout(wait):
                return await asyncio.shield(connecting)
        except TimeoutError:
            raise DeadlineExceeded(f"deadline passed while connecting to {address}") from None

    async def _connect(self, address: str) -> Connection:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        connection: Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(address, self.secret, self.max_frame), host, int(port)
                )
                await connection.ready()
        except BaseException as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, TimeoutError):
                raise ConnectFailed(f"connect to {address} timed out") from None
            if isinstance(exc, OSError):
                raise ConnectFailed(f"cannot connect to {address}: {exc.strerror or exc}") from None
            if isinstance(exc, HandshakeFailed):
                self._handshake_failed(address, exc)
            raise
        self._refusals.pop(address, None)
        connection.on_lost = self._lost
        self._connections[address] = connection
        return connection

    def _handshake_failed(self, address: str, exc: HandshakeFailed) -> None:
        """Log the first failure of a streak (or a new reason), not every attempt that follows."""
        reason = str(exc.details.get("reason", ""))
        if self._refusals.get(address) != reason:
            self._refusals[address] = reason
            log.warning("%s", exc.message)

    def _lost(self, connection: Connection) -> None:
        if self._connections.get(connection.address) is connection:
            del self._connections[connection.address]
            if self.on_lost is not None and not self._closed:
                self.on_lost(connection.address)

    async def aclose(self) -> None:
        """Close every connection; idempotent."""
        self._closed = True
        connecting = list(self._connecting.values())
        for future in connecting:
            future.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        for connection in list(self._connections.values()):
            connection.close()
        self._connections.clear()

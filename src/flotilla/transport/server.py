"""The RPC server: accepts connections, authenticates peers, runs calls concurrently.

The server knows frames, not services: each authenticated ``Call`` is handed to
a ``CallHandler`` (the runtime's dispatcher), whose return value is the
encoded result.  A connection that sends garbage, an oversized or truncated
frame, or a wrong proof is closed with a logged reason; the server and its
other connections carry on.  Nothing a peer sends can raise out of the
protocol's callbacks into the event loop.

What one peer can cost the server is bounded, so that no peer can starve the
others:

* **In the handshake** a peer has
  :data:`~flotilla.transport.server_connection.HANDSHAKE_TIMEOUT` to prove it
  knows the secret, and may send at most
  :data:`~flotilla.transport.server_connection.HANDSHAKE_MAX_FRAME` bytes at a time.
  At most :data:`MAX_HANDSHAKES` connections are in their handshake at once;
  when the table is full, the oldest is evicted to admit the newcomer, and one
  host may hold at most half the table (see
  :mod:`flotilla.transport.handshakes` for why this keeps real clients in
  while idle sockets cycle out).  A refused peer is told why before it is
  closed, in a ``Failure`` frame with id 0 (the connection, not a call):
  ``unauthenticated`` (wrong proof), ``resource_exhausted`` (evicted),
  ``deadline_exceeded`` (too slow), ``protocol_error`` (not a Flotilla peer).
  The warnings about such peers are rate-limited
  (:class:`~flotilla.transport.log_summary.LogSummary`): one line for the
  first of a kind, then one summary per interval, however many sockets come.
* **Calls in flight**: at most ``max_calls_per_connection``
  (:data:`MAX_CALLS_PER_CONNECTION` by default); a call beyond it is answered at
  once with a retryable ``resource_exhausted`` and the connection stays open.
* **Replies not read**: when more than
  :data:`~flotilla.transport.writer.WRITE_BUFFER_HIGH` bytes wait to leave, the
  server stops reading from that connection and starts none of its calls
  until the backlog drains below the low mark.  A peer that never reads
  costs about the high mark plus the replies of the calls that were already
  running.

A handler that raises :class:`~flotilla.errors.ConnectionCut` (fault
injection's *abort*) gets its connection aborted, as a crash would, with every
call in flight on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from flotilla.headers import Headers
from flotilla.transport.frames import DEFAULT_MAX_FRAME
from flotilla.transport.handshakes import HandshakeTable
from flotilla.transport.log_summary import LogSummary
from flotilla.transport.server_connection import ServerConnection

__all__ = ["CallHandler", "Server"]

Task = asyncio.Task[None]

log = logging.getLogger("flotilla.transport")

CallHandler = Callable[[str, msgspec.Raw, Headers], Awaitable[bytes]]
"""Runs one call (``service.method``, the encoded arguments, the headers with the deadline
made absolute on ``time.monotonic()``); returns the msgpack-encoded result or raises a
``FlotillaError``."""

# At most this many connections are in their handshake at once (the oldest is
# evicted for a newcomer), so cheap sockets cannot exhaust file descriptors.
MAX_HANDSHAKES = 128
# Calls one connection may have in flight.  A pool multiplexes all of one
# process's calls to this server on one connection, so this is the most one
# caller process can ask of this server at once; more is a runaway caller.
MAX_CALLS_PER_CONNECTION = 1024


class Server:
    """Listens on ``host:port`` and serves calls until :meth:`drain` or :meth:`aclose`."""

    def __init__(
        self,
        handler: CallHandler,
        *,
        secret: bytes,
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_calls_per_connection: int = MAX_CALLS_PER_CONNECTION,
    ) -> None:
        if max_calls_per_connection < 1:
            raise ValueError(
                f"max_calls_per_connection must be at least 1, not {max_calls_per_connection}"
            )
        self.handler = handler
        self.secret = secret
        self.max_frame = max_frame
        self.max_calls_per_connection = max_calls_per_connection
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._address: str | None = None
        self._connections: set[ServerConnection] = set()
        self._handshakes: HandshakeTable[ServerConnection] = HandshakeTable(MAX_HANDSHAKES)
        self._half_open_log: LogSummary | None = None
        self._inflight = 0
        # Calls cancelled (by their caller, their deadline, a lost connection)
        # that have not finished unwinding: aclose waits for them too.
        self._unwinding: set[Task] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.draining = False

    @property
    def address(self) -> str:
        """``host:port`` actually bound (the port is chosen by the OS when 0 was asked)."""
        if self._address is None:
            raise RuntimeError("server not started")
        return self._address

    async def start(self) -> None:
        """Listen on ``host:port``; :attr:`address` tells the port chosen."""
        loop = asyncio.get_running_loop()
        self._half_open_log = LogSummary(
            log, loop, verb="closed", what="connections in their handshake"
        )
        self._server = await loop.create_server(
            lambda: ServerConnection(self), self._host, self._port, reuse_address=True
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._address = f"{host}:{port}"

    async def drain(self, timeout: float) -> None:
        """Stop accepting, refuse new calls, and wait up to ``timeout`` for in-flight ones."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("drain timed out with %d call(s) in flight; cancelling", self._inflight)

    async def aclose(self) -> None:
        """Close every connection (cancelling calls still running); idempotent."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            for entry in list(connection.calls.values()):
                self._cancel(entry[0])
            connection.close()
        # Wait for every cancelled call to unwind, so that its clean-up is
        # done before the services it uses are stopped.
        await asyncio.gather(*self._unwinding, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._half_open_log is not None:
            self._half_open_log.close()

    def _cancel(self, task: Task) -> None:
        """Cancel a call's task, once, and keep it until it has unwound (see :meth:`aclose`).

        Once: a second cancellation (the connection lost after a Cancel, say)
        would interrupt the handler's own clean-up.
        """
        if task in self._unwinding:
            return
        task.cancel()
        if not task.done():
            self._unwinding.add(task)
            task.add_done_callback(self._unwinding.discard)

    def _call_started(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _call_finished(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    def _warn_half_open(self, kind: str, message: str, *args: object) -> None:
        if self._half_open_log is not None:
            self._half_open_log.warn(kind, message, *args)

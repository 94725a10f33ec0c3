"""The ops HTTP port: a tiny HTTP/1.1 server for probes and status (``/healthz``, ``/readyz``...).

It answers ``GET`` of a fixed set of paths, each with JSON made by a route
function; what the routes say is :mod:`flotilla.runtime.ops_routes`'s.  HTTP
is parsed by h11 (a pure, well-tested state machine) over
``asyncio.start_server``: the port serves a few probes a second, so a web
framework would be weight without use, and a hand-written parser a risk.

Every connection gets one answer and is closed (``Connection: close``):
probes open a connection per probe anyway, and no state is kept between
requests.  A hostile or broken client costs the node nothing but a socket
for a bounded time::

    request head larger than MAX_HEAD bytes          -> 431, closed
    a body (a GET has none) larger than MAX_BODY     -> 413, closed
    not HTTP                                         -> 400, closed
    not all of it within REQUEST_TIMEOUT seconds     -> 408, closed
    more than MAX_CONNECTIONS at once                -> closed at once
    a method other than GET / HEAD                   -> 405
    an unknown path                                  -> 404
    a route that raises                              -> 500 (logged), the node stays up
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import h11
import msgspec

__all__ = ["MAX_BODY", "MAX_HEAD", "OpsServer", "Route"]

log = logging.getLogger("flotilla.runtime")

Route = Callable[[], tuple[int, Any]]
"""Answers a GET: the status code and a body msgspec can encode as JSON."""

MAX_HEAD = 8192
MAX_BODY = 4096
REQUEST_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
MAX_CONNECTIONS = 64
LINGER = 1.0
MAX_LINGER = 65536
_READ = 4096


class _Refused(Exception):
    """A request answered with an error status before any route ran."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class OpsServer:
    """Serves ``routes`` (path -> :data:`Route`) on ``host:port`` (0: any free port).

    A node part: started early, stopped late (see :mod:`flotilla.runtime.node`).
    """

    name = "ops"

    def __init__(
        self,
        routes: Mapping[str, Route],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.routes = dict(routes)
        self.host = host
        self.port = port
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    @property
    def address(self) -> str:
        """``host:port`` it listens on (once started)."""
        if self._server is None:
            raise RuntimeError("the ops server is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    @property
    def open_connections(self) -> int:
        """Connections being answered now."""
        return len(self._connections)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)

    async def stop(self) -> None:
        """Stop listening, cut the connections still open, wait for their tasks; idempotent."""
        if self._server is None:
            return
        self._server.close()
        # The handlers' tasks belong to asyncio's server, which logs a cancelled
        # one as an error: their connections are closed instead, which ends them
        # (awaited here, since wait_closed() does not wait for them on 3.11); a
        # connection whose client reads nothing is cut.
        for writer in self._connections.values():
            writer.transport.close()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=LINGER)
        for writer in self._connections.values():
            writer.transport.abort()
        if self._connections:
            await asyncio.wait(list(self._connections))
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            writer.close()
            return
        self._connections[task] = writer
        try:
            await self._answer(reader, writer)
        except (ConnectionError, TimeoutError) as exc:
            log.debug("ops client went away: %r", exc)
        finally:
            del self._connections[task]
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        try:
            async with asyncio.timeout(self.request_timeout):
                request = await _read_request(connection, reader)
            status, body = self._route(request)
        except _Refused as refused:
            status, body = refused.status, {"error": refused.reason}
            request = None
        except TimeoutError:
            status, body, request = 408, {"error": "the request did not arrive in time"}, None
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # h11 cannot answer in this state: just close
        head_only = request is not None and request.method == b"HEAD"
        async with asyncio.timeout(WRITE_TIMEOUT):
            await _respond(connection, writer, status, body, head_only=head_only)
        if request is None:
            if writer.can_write_eof():
                writer.write_eof()  # the answer is complete: the client may close now
            await _linger(reader)

    def _route(self, request: h11.Request) -> tuple[int, Any]:
        if request.method not in (b"GET", b"HEAD"):
            return 405, {"error": f"method {request.method.decode()} not allowed; use GET"}
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        route = self.routes.get(path)
        if route is None:
            return 404, {"error": f"no such path {path!r}", "paths": sorted(self.routes)}
        try:
            return route()
        except Exception as exc:
            log.exception("the ops route %s failed", path)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}


async def _read_request(connection: h11.Connection, reader: asyncio.StreamReader) -> h11.Request:
    """The request's head, its body (bounded) read and dropped."""
    request: h11.Request | None = None
    body = 0
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            reason = "request head too large" if status == 431 else f"bad request: {exc}"
            raise _Refused(status, reason) from None
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(_READ))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += len(event.data)
            if body > MAX_BODY:
                raise _Refused(413, f"request body over {MAX_BODY} bytes")
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None  # h11 yields the head first
            return request
        else:  # ConnectionClosed before the request ended
            raise ConnectionResetError("the client closed before its request ended")


async def _respond(
    connection: h11.Connection,
    writer: asyncio.StreamWriter,
    status: int,
    body: Any,
    *,
    head_only: bool,
) -> None:
    payload = msgspec.json.encode(body) + b"\n"
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(payload))),
        ("connection", "close"),
        ("cache-control", "no-store"),
    ]
    writer.write(connection.send(h11.Response(status_code=status, headers=headers)) or b"")
    if not head_only:
        writer.write(connection.send(h11.Data(data=payload)) or b"")
    writer.write(connection.send(h11.EndOfMessage()) or b"")
    await writer.drain()


async def _linger(reader: asyncio.StreamReader) -> None:
    """Read and drop what a refused client still sends, briefly, before closing.

    Closing a socket with unread input makes the kernel send a reset, which
    can destroy the error response before the client reads it (what HTTP
    servers call a lingering close).
    """
    dropped = 0
    async with asyncio.timeout(LINGER):
        while dropped < MAX_LINGER and (chunk := await reader.read(_READ)):
            dropped += len(chunk)

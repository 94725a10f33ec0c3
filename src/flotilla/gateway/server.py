"""Serving an ASGI app over HTTP with uvicorn, as a part with a start and a stop.

uvicorn because it is the ASGI server most run in production, parses HTTP
with h11 or httptools (both well tested), runs on the uvloop loop Flotilla
already uses, and closes a connection rather than read a body the app
refused.  It is driven here as a library, not as a program:

* the listening socket is bound here (port 0 gives a free port, and the
  address is known before the first request);
* it installs no signal handlers (``capture_signals`` is a no-op): the
  process that hosts it owns its signals and calls :meth:`HttpServer.stop`;
* its task is owned by this object, started by :meth:`start` and awaited by
  :meth:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from flotilla.errors import Unavailable
from flotilla.gateway.cork import CorkedHttpToolsProtocol

__all__ = ["HttpServer"]

# How long start waits for uvicorn to listen, and stop for it to finish in-flight requests.
_START_TIMEOUT = 10.0
_STARTED_POLL = 0.005


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The host process handles signals (see the module docstring).
        yield


class HttpServer:
    """``app`` served on ``host:port`` (0: any free port) until :meth:`stop`."""

    def __init__(
        self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, drain: float = 10.0
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._config = uvicorn.Config(
            app,
            lifespan="off",  # the gateway's life is started and stopped by its owner
            # httptools, each answer in one write (flotilla.gateway.cork says why).
            http=CorkedHttpToolsProtocol,
            ws="none",  # no route upgrades to a WebSocket
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(max(1, drain)),
            server_header=False,
            # Who the client is, is the gateway's call (GatewayConfig.trusted_proxies),
            # not uvicorn's, which would trust X-Forwarded-For from loopback by default.
            proxy_headers=False,
            log_config=None,  # its loggers propagate to the process's logging set-up
        )
        self._server = _Server(self._config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """``host:port`` it listens on (once started)."""
        if self._socket is None:
            raise RuntimeError("the server is not started")
        host, port = self._socket.getsockname()[:2]
        return f"{host}:{port}"

    async def start(self) -> None:
        """Bind and listen; return once requests are accepted."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self._socket = sock
        task = self._task = asyncio.create_task(
            self._server.serve(sockets=[sock]), name="http server"
        )
        try:
            # uvicorn says it listens only through a flag.
            async with asyncio.timeout(_START_TIMEOUT):
                while not self._server.started:
                    if task.done():
                        task.result()  # raises what stopped it
                        raise Unavailable(f"the HTTP server on {self.address} stopped at start")
                    await asyncio.sleep(_STARTED_POLL)
        except BaseException:
            # Cancelled or failed: the server task must not outlive start, and
            # what went wrong is what start raises, not how the task ended.
            self._task = None
            self._server.should_exit = True
            await asyncio.wait([task])
            sock.close()
            raise

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight (bounded), close; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            self._server.should_exit = True
            await task
        if self._socket is not None:
            self._socket.close()

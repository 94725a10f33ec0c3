"""One write per HTTP answer: uvicorn's httptools protocol over a transport that corks.

uvicorn writes an answer's head (``http.response.start``) and its body
(``http.response.body``) with one ``transport.write`` each, and uvloop sends
each at once: two ``send`` system calls per answer, and a client that wakes
twice (it has the head, then waits for the body).  On loopback a ``send``
runs the receiver's side of TCP too, so on the gateway's hot path this was
the largest single cost after the onward call's own write (``bench/gateway.py
--profile``).

:class:`CorkedTransport` holds what is written during one turn of the event
loop and hands it to the real transport as one write at the end of that turn
(``loop.call_soon``): the head and body of an answer, sent by the app in one
step, leave in one segment.  Nothing waits longer than the loop's current
turn, and ``close`` sends what is held first.

:class:`CorkedHttpToolsProtocol` is uvicorn's own protocol (parser, flow
control, keep-alive, pipelining, limits) given that transport; it is passed
to ``uvicorn.Config(http=...)``, which takes a protocol class for this.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CorkedHttpToolsProtocol", "CorkedTransport"]


class CorkedTransport:
    """``transport`` with writes of one loop turn joined into one (see the module docstring).

    Everything but writing and closing is the wrapped transport's own.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        held = self._held
        held.append(bytes(data))
        if len(held) == 1:
            self._loop.call_soon(self.flush)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Hand what is held to the transport (once it is closed, there is no one to send to)."""
        held = self._held
        if not held:
            return
        self._held = []
        if not self.transport.is_closing():
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def is_closing(self) -> bool:  # asked after every answer: not through __getattr__
        return self.transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(len(data) for data in self._held)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._held = []
        self.transport.abort()

    def __getattr__(self, name: str) -> Any:
        # Reading, flow control, extra info: the transport's own.
        return getattr(self.transport, name)


class CorkedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        corked = CorkedTransport(transport, self.loop)
        super().connection_made(corked)  # type: ignore[arg-type]

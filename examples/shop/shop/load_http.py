"""A lean HTTP/1.1 client for the load generator: h11 over asyncio streams, kept-alive.

The load generator shares the machine with the shop it measures, so its own
CPU per request matters: httpx spends about 2-3 ms of CPU on a request here
(its URL, header and transport layers), h11 on a bare stream about 0.2 ms, so
one generator keeps a schedule of a few hundred requests a second without
taking the shop's cores.  Only what the load needs: JSON bodies, a few
headers, answers with a ``Content-Length`` or chunked, a bounded pool.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import h11
import msgspec

__all__ = ["Answer", "HttpFailure", "LeanClient"]


class HttpFailure(Exception):
    """The request got no answer: refused, reset, timed out or not HTTP."""


class _Stale(Exception):
    """A kept-alive connection the server had closed: nothing of the answer came."""


class Answer(msgspec.Struct, frozen=True):
    status: int
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = h11.Connection(h11.CLIENT)

    async def exchange(self, request: h11.Request, body: bytes) -> Answer:
        send = self.protocol.send
        out = [send(request) or b""]
        if body:
            out.append(send(h11.Data(data=body)) or b"")
        out.append(send(h11.EndOfMessage()) or b"")
        self.writer.write(b"".join(out))
        status, chunks, heard = 0, [], False
        while True:
            event = self.protocol.next_event()
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                if not data and not heard:
                    raise _Stale()
                heard = True
                self.protocol.receive_data(data)  # b"": the server closed
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return Answer(status, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpFailure("the server closed the connection mid-answer")

    @property
    def reusable(self) -> bool:
        if self.protocol.our_state is h11.DONE and self.protocol.their_state is h11.DONE:
            self.protocol.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        self.writer.close()


class LeanClient:
    """Requests to one ``base_url`` over at most ``connections`` kept-alive connections."""

    def __init__(self, base_url: str, connections: int = 100, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url!r}: an http:// URL with a host")
        self.host, self.port = parts.hostname, parts.port or 80
        self.authority = parts.netloc
        self.timeout = timeout
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []

    async def request(
        self,
        method: str,
        path: str,
        json: object = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Send one request and read its answer; ``HttpFailure`` when none comes."""
        body = b"" if json is None else msgspec.json.encode(json)
        fields = [("Host", self.authority), ("Content-Length", str(len(body)))]
        if json is not None:
            fields.append(("Content-Type", "application/json"))
        fields += (headers or {}).items()
        request = h11.Request(method=method, target=path, headers=fields)
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._exchange(request, body)
            except (OSError, TimeoutError, h11.ProtocolError, HttpFailure) as exc:
                raise HttpFailure(f"{method} {path}: {exc!r}") from exc

    async def _exchange(self, request: h11.Request, body: bytes) -> Answer:
        while self._idle:
            # A kept-alive connection may have been closed by the server meanwhile (its
            # keep-alive timeout): then the request never reached it, and goes on another.
            connection = self._idle.pop()
            try:
                return await self._on(connection, request, body)
            except (_Stale, ConnectionResetError, BrokenPipeError):
                continue
        connection = _Connection(*await asyncio.open_connection(self.host, self.port))
        try:
            return await self._on(connection, request, body)
        except _Stale:
            raise HttpFailure("the server closed a new connection without answering") from None

    async def _on(self, connection: _Connection, request: h11.Request, body: bytes) -> Answer:
        try:
            answer = await connection.exchange(request, body)
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            self._idle.append(connection)
        else:
            connection.close()
        return answer

    async def aclose(self) -> None:
        while self._idle:
            connection = self._idle.pop()
            connection.close()
            await connection.writer.wait_closed()

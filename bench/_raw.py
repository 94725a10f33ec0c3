"""The no-framework baseline: uvloop + msgspec + 4-byte length-prefixed msgpack, nothing else.

    python bench/_raw.py server                      # prints {"port": N} then serves
    python bench/_raw.py client --port N --concurrency 64 --seconds 3

A request is ``[id, "echo.ping", {"n": 1}]``, a reply ``[id, result]``.  The
server decodes the request, looks the method up in a dict, calls it with the
decoded arguments and encodes the reply; it answers inline in
``data_received`` (no task per call), one ``transport.write`` per reply.  The
client keeps a dict of futures by id, one ``transport.write`` per request.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

import _loadgen
import msgspec
import uvloop

HEADER = 4
_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder().decode


def _frame(message: Any) -> bytearray:
    buffer = bytearray(HEADER)
    _encoder.encode_into(message, buffer, HEADER)
    buffer[:HEADER] = (len(buffer) - HEADER).to_bytes(HEADER, "big")
    return buffer


class _Framed(asyncio.Protocol):
    """Splits the byte stream into length-prefixed msgpack messages for ``on_message``,
    which each side's subclass defines."""

    on_message: Callable[[Any], None]

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance(asyncio.Transport) check: uvloop's TCPTransport is not a subclass.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        view = memoryview(data)
        end = len(data)
        position = 0
        while end - position >= HEADER:
            stop = position + HEADER + int.from_bytes(view[position : position + HEADER], "big")
            if stop > end:
                break
            self.on_message(_decode(view[position + HEADER : stop]))
            position = stop
        self._buffer = bytes(view[position:]) if position < end else b""


# -- server -------------------------------------------------------------------------------


def ping(n: int) -> int:
    return n


HANDLERS = {"echo.ping": ping}


class _ServerProtocol(_Framed):
    def on_message(self, message: Any) -> None:
        call_id, method, args = message
        assert self.transport is not None
        self.transport.write(_frame([call_id, HANDLERS[method](**args)]))


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_ServerProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _loadgen.emit({"port": port})
    await asyncio.Event().wait()  # until the driver terminates us


# -- client -------------------------------------------------------------------------------


class _ClientProtocol(_Framed):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0

    async def call(self, method: str, args: dict[str, Any]) -> Any:
        self.next_id = call_id = self.next_id + 1
        future = self.loop.create_future()
        self.pending[call_id] = future
        assert self.transport is not None
        self.transport.write(_frame([call_id, method, args]))
        return await future

    def on_message(self, message: Any) -> None:
        call_id, result = message
        future = self.pending.pop(call_id, None)
        if future is not None and not future.done():
            future.set_result(result)


async def _client(port: int, concurrency: int, warmup: float, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_ClientProtocol, "127.0.0.1", port)
    try:
        if await protocol.call("echo.ping", {"n": 1}) != 1:
            raise SystemExit("raw echo returned the wrong answer")

        def call() -> Any:
            return protocol.call("echo.ping", {"n": 1})

        result = await _loadgen.measure(
            call, concurrency=concurrency, warmup=warmup, seconds=seconds
        )
    finally:
        transport.close()
    result["kind"] = "raw"
    _loadgen.emit(result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("server")
    client = sub.add_parser("client")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--concurrency", type=int, default=1)
    client.add_argument("--warmup", type=float, default=0.5)
    client.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        if args.mode == "server":
            uvloop.run(_serve())
        else:
            uvloop.run(_client(args.port, args.concurrency, args.warmup, args.seconds))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

"""The no-framework baseline: uvloop + msgspec + 4-byte length-prefixed msgpack, nothing else.

    python bench/_raw.py server                      # prints {"port": N} then serves
    python bench/_raw.py client --port N --concurrency 64 --seconds 3

A request is ``[id, "echo.ping", {"n": 1}]``, a reply ``[id, result]``: the
same payload as flotilla's call and the same framing (a few dozen bytes of
msgpack behind a 4-byte length), without flotilla's extra frame fields
(deadline, request id, caller, metadata).

What each side does, chosen to be the strongest *simple* baseline, the way a
hand-written server and client would be, and no cheaper than honest:

* server: decodes every request of one read, looks the method up in a dict,
  calls it with the decoded arguments, and encodes each reply into one shared
  buffer; the replies to one read leave in **one** ``transport.write``.  It
  answers inline in ``data_received``: no task per call.
* client: a dict of futures by id.  A call with no other call in flight is
  written at once (one write per request at c=1); while other calls are in
  flight, the requests sent in one loop iteration are written together at its
  end, and at once when ``--flush-frames`` of them are waiting (16 by
  default).  That is the rule flotilla's client follows
  (``flotilla/transport/writer.py``), so the two clients make the same number
  of system calls.
* every request and every reply is decoded in full; nothing is cached or
  precomputed across calls.
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
FLUSH_FRAMES = 16  # as flotilla's FrameWriter
_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder().decode


def _frame(message: Any) -> bytearray:
    buffer = bytearray(HEADER)
    _encoder.encode_into(message, buffer, HEADER)
    buffer[:HEADER] = (len(buffer) - HEADER).to_bytes(HEADER, "big")
    return buffer


def _append_frame(buffer: bytearray, message: Any) -> None:
    """Encode ``message`` with its length header at the end of ``buffer`` (no copy)."""
    start = len(buffer)
    _encoder.encode_into(message, buffer, start + HEADER)
    buffer[start : start + HEADER] = (len(buffer) - start - HEADER).to_bytes(HEADER, "big")


class _Framed(asyncio.Protocol):
    """Splits the byte stream into length-prefixed msgpack messages for ``on_messages``,
    which each side's subclass defines; it gets the decoded messages of one read."""

    on_messages: Callable[[list[Any]], None]

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
        messages = []
        while end - position >= HEADER:
            stop = position + HEADER + int.from_bytes(view[position : position + HEADER], "big")
            if stop > end:
                break
            messages.append(_decode(view[position + HEADER : stop]))
            position = stop
        self._buffer = bytes(view[position:]) if position < end else b""
        if messages:
            self.on_messages(messages)


# -- server -------------------------------------------------------------------------------


def ping(n: int) -> int:
    return n


HANDLERS = {"echo.ping": ping}


class _ServerProtocol(_Framed):
    def on_messages(self, messages: list[Any]) -> None:
        out = bytearray()
        for call_id, method, args in messages:
            _append_frame(out, [call_id, HANDLERS[method](**args)])
        assert self.transport is not None
        self.transport.write(out)  # the replies to one read: one system call


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_ServerProtocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _loadgen.emit({"port": port})
    await asyncio.Event().wait()  # until the driver terminates us


# -- client -------------------------------------------------------------------------------


class _ClientProtocol(_Framed):
    def __init__(self, flush_frames: int) -> None:
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.next_id = 0
        self.flush_frames = flush_frames
        self.outgoing: list[bytearray] = []
        self.scheduled = False

    async def call(self, method: str, args: dict[str, Any]) -> Any:
        self.next_id = call_id = self.next_id + 1
        future = self.loop.create_future()
        self.pending[call_id] = future
        outgoing = self.outgoing
        outgoing.append(_frame([call_id, method, args]))
        if len(self.pending) == 1 or len(outgoing) >= self.flush_frames:
            self._write()  # a lone call waits for nothing; a full batch leaves now
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self.scheduled = False
        self._write()

    def _write(self) -> None:
        outgoing = self.outgoing
        if not outgoing:
            return
        self.outgoing = []
        assert self.transport is not None
        self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def on_messages(self, messages: list[Any]) -> None:
        for call_id, result in messages:
            future = self.pending.pop(call_id, None)
            if future is not None and not future.done():
                future.set_result(result)


async def _client(
    port: int, concurrency: int, warmup: float, seconds: float, flush_frames: int
) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: _ClientProtocol(flush_frames), "127.0.0.1", port
    )
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
    client.add_argument(
        "--flush-frames",
        type=int,
        default=FLUSH_FRAMES,
        help=f"write a batch of requests once it holds this many ({FLUSH_FRAMES}, as flotilla)",
    )
    args = parser.parse_args(argv)
    if args.mode == "client" and args.flush_frames < 1:
        parser.error("--flush-frames must be at least 1")
    try:
        if args.mode == "server":
            uvloop.run(_serve())
        else:
            uvloop.run(
                _client(args.port, args.concurrency, args.warmup, args.seconds, args.flush_frames)
            )
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

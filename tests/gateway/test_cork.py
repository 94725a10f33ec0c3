"""Writes of one loop turn leave as one: an HTTP answer's head and body in one segment."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from flotilla.gateway.cork import CorkedTransport
from flotilla.gateway.server import HttpServer


class RecordingTransport:
    """What a transport was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 5

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


def corked() -> tuple[CorkedTransport, RecordingTransport]:
    inner = RecordingTransport()
    return CorkedTransport(inner, asyncio.get_running_loop()), inner  # type: ignore[arg-type]


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_writes_of_one_turn_leave_as_one_at_its_end() -> None:
    transport, inner = corked()
    transport.write(b"head ")
    transport.write(b"")
    transport.writelines([b"body", b"!"])
    assert inner.calls == []
    assert transport.get_write_buffer_size() == 5 + len(b"head body!")
    await next_turn()
    assert inner.calls == [("write", b"head body!")]
    transport.write(b"next")
    await next_turn()
    assert inner.calls[-1] == ("write", b"next")


async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    transport, inner = corked()
    transport.write(b"last words")
    transport.close()
    assert inner.calls == [("write", b"last words"), ("close", None)]
    transport, inner = corked()
    transport.write(b"dropped")
    transport.abort()
    await next_turn()
    assert inner.calls == [("abort", None)]


async def test_the_rest_is_the_transports_own() -> None:
    transport, _ = corked()
    assert transport.get_extra_info("peername") == "info peername"


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


async def test_an_answer_arrives_in_one_segment() -> None:
    server = HttpServer(Starlette(routes=[Route("/", hello)]))
    await server.start()
    try:
        host, _, port = server.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(3):  # kept alive: each answer whole in the first read
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(5):
                first = await reader.read(65536)
            assert first.startswith(b"HTTP/1.1 200 ")
            assert first.endswith(b"\r\n\r\nhello")
        writer.close()
    finally:
        await server.stop()

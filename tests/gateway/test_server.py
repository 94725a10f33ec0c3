"""uvicorn as a part: listens on a free port, serves, stops; a taken port fails at start."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from flotilla.gateway.server import HttpServer


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", hello)])


async def test_it_serves_on_a_free_port_until_stopped() -> None:
    server = HttpServer(APP)
    await server.start()
    url = f"http://{server.address}/"
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).text == "hello"
    await server.stop()
    await server.stop()  # idempotent
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)


async def test_a_port_in_use_fails_at_start() -> None:
    first = HttpServer(APP)
    await first.start()
    try:
        port = int(first.address.rpartition(":")[2])
        with pytest.raises(OSError, match="in use"):
            await HttpServer(APP, port=port).start()
    finally:
        await first.stop()

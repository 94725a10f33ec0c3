"""The ops HTTP server over real sockets: good requests, hostile ones, and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flotilla.runtime.ops_http import MAX_BODY, MAX_HEAD, OpsServer
from flotilla.testing import wait_for


def broken() -> tuple[int, Any]:
    raise RuntimeError("the route broke")


ROUTES = {
    "/healthz": lambda: (200, {"alive": True}),
    "/readyz": lambda: (503, {"ready": False}),
    "/broken": broken,
}


@pytest.fixture
async def server() -> AsyncIterator[OpsServer]:
    # Short, for the half-request test; long enough for a whole one on a busy machine.
    ops = OpsServer(ROUTES, port=0, request_timeout=1.0)
    await ops.start()
    yield ops
    await ops.stop()


async def exchange(address: str, data: bytes) -> bytes:
    """Send ``data``, read until the server closes the connection."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


async def get(address: str, path: str) -> tuple[int, Any]:
    status, _, body = parse(
        await exchange(address, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    )
    return status, json.loads(body)


async def test_a_route_answers_json_and_closes(server: OpsServer) -> None:
    response = await exchange(server.address, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse(response)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert json.loads(body) == {"alive": True}
    assert await get(server.address, "/readyz?verbose=1") == (503, {"ready": False})


async def test_an_unknown_path_is_404_listing_the_known_ones(server: OpsServer) -> None:
    status, body = await get(server.address, "/nope")
    assert status == 404
    assert body == {"error": "no such path '/nope'", "paths": ["/broken", "/healthz", "/readyz"]}


async def test_head_answers_without_a_body(server: OpsServer) -> None:
    status, headers, body = parse(
        await exchange(server.address, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0


async def test_other_methods_are_405(server: OpsServer) -> None:
    request = b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    status, _, body = parse(await exchange(server.address, request))
    assert status == 405
    assert json.loads(body)["error"] == "method POST not allowed; use GET"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"this is not http\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2 * MAX_HEAD + b"\r\n\r\n", 431),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
            + b"a" * (MAX_BODY + 1),
            413,
        ),
    ],
)
async def test_bad_requests_get_an_error_status_and_the_server_keeps_serving(
    server: OpsServer, request_bytes: bytes, status: int
) -> None:
    response = await exchange(server.address, request_bytes)
    assert parse(response)[0] == status
    assert (await get(server.address, "/healthz"))[0] == 200


async def test_a_client_that_sends_half_a_request_gets_408_after_the_timeout(
    server: OpsServer,
) -> None:
    response = await exchange(server.address, b"GET /healthz HTTP/1.1\r\nHo")
    assert parse(response)[0] == 408


async def test_a_client_that_hangs_up_early_costs_nothing(server: OpsServer) -> None:
    host, _, port = server.address.rpartition(":")
    for _ in range(5):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /hea")
        writer.close()
    assert (await get(server.address, "/healthz"))[0] == 200


async def test_a_route_that_raises_is_500_and_logged(
    server: OpsServer, caplog: pytest.LogCaptureFixture
) -> None:
    status, body = await get(server.address, "/broken")
    assert (status, body) == (500, {"error": "RuntimeError: the route broke"})
    assert "the ops route /broken failed" in caplog.text
    assert (await get(server.address, "/healthz"))[0] == 200


async def test_stop_cuts_connections_still_open() -> None:
    ops = OpsServer(ROUTES, port=0, request_timeout=30)
    await ops.start()
    host, _, port = ops.address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
    await writer.drain()
    # Both within the bound, not after the 30 s request timeout: the stop, and
    # the end of the connection (an EOF or a reset) on the client's side.
    async with asyncio.timeout(5):
        await ops.stop()
        with contextlib.suppress(ConnectionResetError):
            await reader.read()
    writer.close()
    await ops.stop()  # idempotent


async def test_connections_over_the_limit_are_closed_at_once() -> None:
    ops = OpsServer(ROUTES, port=0, request_timeout=30, max_connections=2)
    await ops.start()
    host, _, port = ops.address.rpartition(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
    try:
        await wait_for(lambda: ops.open_connections == 2)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):  # closed, not answered, and not after 30 s
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
        writer.close()
        for _, idle_writer in idle:
            idle_writer.close()
        await wait_for(lambda: ops.open_connections == 0)
        assert (await get(ops.address, "/healthz"))[0] == 200  # room again
    finally:
        await ops.stop()

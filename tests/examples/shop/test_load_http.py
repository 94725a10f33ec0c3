"""The load generator's lean HTTP client: JSON both ways, kept-alive connections, a server that
closed an idle connection, and no server at all."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from shop.load_http import HttpFailure, LeanClient


class EchoServer:
    """Answers each request with its method, path, headers and body as JSON; with
    ``close_after`` it closes every connection after answering, as a keep-alive timeout does."""

    def __init__(self, close_after: bool = False) -> None:
        self.close_after = close_after
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = dict(line.split(": ", 1) for line in lines[1:] if line)
                body = await reader.readexactly(int(headers.get("Content-Length", "0")))
                seen = {"method": method, "path": path, "headers": headers, "body": body.decode()}
                answer = json.dumps(seen).encode()
                writer.write(
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass  # the client went away
        writer.close()
        await writer.wait_closed()


@asynccontextmanager
async def echo(close_after: bool = False) -> AsyncIterator[tuple[EchoServer, str]]:
    server = EchoServer(close_after)
    listening = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        listening.close()


async def test_json_goes_out_and_comes_back_on_one_kept_alive_connection() -> None:
    async with echo() as (server, url):
        client = LeanClient(url, connections=1)
        for number in range(3):
            answer = await client.request(
                "POST", "/api/orders?x=1", {"n": number}, {"Authorization": "Bearer t"}
            )
            assert answer.status == 201
            seen = answer.json()
            assert (seen["method"], seen["path"]) == ("POST", "/api/orders?x=1")
            assert json.loads(seen["body"]) == {"n": number}
            assert seen["headers"]["Authorization"] == "Bearer t"
            assert seen["headers"]["Content-Type"] == "application/json"
        assert (await client.request("GET", "/healthz")).json()["body"] == ""
        assert server.connections == 1
        await client.aclose()


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async with echo(close_after=True) as (server, url):
        client = LeanClient(url, connections=1)
        for _ in range(3):
            assert (await client.request("GET", "/")).status == 201  # never a failure
        assert server.connections == 3
        await client.aclose()


async def test_no_server_is_an_http_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    client = LeanClient(f"http://127.0.0.1:{port}")
    with pytest.raises(HttpFailure, match="GET /"):
        await client.request("GET", "/")

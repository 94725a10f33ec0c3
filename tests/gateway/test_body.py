"""Bodies over the limit are refused without being read; short of it, they are parsed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from flotilla.gateway.body import read_json
from flotilla.gateway.problems import BadRequest

from .conftest import running_gateway


async def exchange_head(address: str, head: bytes, body_part: bytes) -> tuple[bytes, int]:
    """Send ``head`` and only ``body_part`` of the body; the answer, and the bytes sent."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body_part)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read(65536)
        return answer, len(body_part)
    finally:
        writer.close()


async def test_a_10_mb_body_is_refused_before_it_is_sent(token: Callable[..., str]) -> None:
    async with running_gateway() as (_, client):
        address = str(client.base_url).removeprefix("http://").rstrip("/")
        size = 10 * 1024 * 1024
        head = (
            f"POST /notes HTTP/1.1\r\nHost: x\r\nAuthorization: {token()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
        # 64 KiB of 10 MiB sent: the answer comes anyway, so nothing waited for the rest.
        answer, sent = await exchange_head(address, head, b"x" * 65536)
        assert sent < size
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert b'"code":"body_too_large"' in answer
        # The gateway is still there.
        assert (await client.get("/healthz")).status_code == 200


async def test_a_chunked_body_is_cut_off_at_the_limit(token: Callable[..., str]) -> None:
    async with running_gateway(max_body=1000) as (_, client):

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
            for _ in range(100):
                yield b" " * 100

        response = await client.post("/notes", content=chunks(), headers={"Authorization": token()})
        assert response.status_code == 413
        assert "limit of 1000 bytes" in response.json()["error"]["message"]


async def test_the_default_limit_is_one_mib(token: Callable[..., str]) -> None:
    async with running_gateway() as (_, client):
        auth = {"Authorization": token()}
        padding = " " * (1024 * 1024 - 20)
        under = await client.post("/notes", content=f'{{"text": "a"}}{padding}', headers=auth)
        assert under.status_code == 201
        over = await client.post(
            "/notes", content=f'{{"text": "a"}}{padding}' + " " * 40, headers=auth
        )
        assert over.status_code == 413


async def test_an_empty_body_is_no_arguments(client: httpx.AsyncClient) -> None:
    response = await client.post("/slow", content=b"")
    assert response.status_code == 422
    assert "seconds" in response.json()["error"]["message"]


async def test_a_client_gone_before_its_whole_body_is_a_bad_request_not_a_fault() -> None:
    messages = iter(
        [
            {"type": "http.request", "body": b'{"text": ', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict[str, object]:
        return next(messages)

    with pytest.raises(BadRequest, match="went away"):
        await read_json(receive, None, 1000)


async def test_a_body_in_chunks_is_joined_before_it_is_parsed() -> None:
    messages = iter(
        [
            {"type": "http.request", "body": b'{"text": ', "more_body": True},
            {"type": "http.request", "body": b'"hi"}', "more_body": False},
        ]
    )

    async def receive() -> dict[str, object]:
        return next(messages)

    assert await read_json(receive, None, 1000) == {"text": "hi"}

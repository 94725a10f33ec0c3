"""An answer sent straight through ASGI: no response object between the handler and the server."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Send

__all__ = ["send_json"]

_JSON = (b"content-type", b"application/json")


async def send_json(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """``body`` (JSON) with ``status`` and ``headers`` besides its length and type."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", b"%d" % len(body)), _JSON, *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""Reading a request body under a size limit, without reading more than the limit.

A declared ``Content-Length`` over the limit is refused before a byte of the
body is read; a body without one (chunked) is read as it arrives and refused
as soon as it passes the limit.  Either way the gateway holds at most
``limit`` bytes of it, and the server closes the connection rather than read
the rest.  Bytes that are not JSON are a 400 naming the position.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.types import Receive

from flotilla.gateway.binding import NO_BODY
from flotilla.gateway.problems import BadRequest, BodyTooLarge

__all__ = ["DEFAULT_MAX_BODY", "read_json"]

DEFAULT_MAX_BODY = 1 << 20
"""1 MiB."""


async def read_json(receive: Receive, declared: str | None, limit: int) -> Any:
    """The JSON body ``receive`` gives (:data:`NO_BODY` when empty), at most ``limit`` bytes.

    ``declared``: the request's ``Content-Length`` (None when it has none).
    """
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest(f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise BodyTooLarge(f"the body ({declared} bytes) is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: no one waits for an answer
            raise BadRequest("the client went away before it sent the whole body")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if not data.strip():
        return NO_BODY
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        # msgspec decodes nested arrays and objects recursively: ``[[[[...`` a few
        # thousand deep (well under the size limit) exhausts the stack.  No API takes that.
        raise BadRequest("the body is not valid JSON: it is nested too deeply") from None

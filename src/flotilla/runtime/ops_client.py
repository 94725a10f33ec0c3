"""Reading other nodes' ops ports: what ``flotilla ps`` and the ``flotilla run`` table ask them.

Each instance publishes its node's ops port in its metadata (``ops`` =
``host:port``).  A port that does not answer in time, or answers with
something other than the status JSON, is *unknown* (None), never an error:
a display of many nodes must not fail because one of them is stuck.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import h11
import msgspec

from flotilla.registry import Instance
from flotilla.resilience.states import summarize

__all__ = ["UNREACHABLE", "breaker_summaries", "fetch_json"]

UNREACHABLE = "?"
"""What a breakers column shows for a node whose ops port did not answer."""

_MAX_RESPONSE = 1 << 20


async def fetch_json(address: str, path: str, *, timeout: float = 0.5) -> Any | None:
    """``GET path`` of the ops port at ``address``: the JSON of a 2xx answer, else None."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            try:
                return await _exchange(reader, writer, host, path)
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError, h11.ProtocolError, msgspec.DecodeError):
        return None


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str
) -> Any | None:
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=path, headers=[("host", host)])
    writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
    status, body = 0, bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > _MAX_RESPONSE:
                return None
        else:  # EndOfMessage, or the connection closed early
            break
    if not (200 <= status < 300 and isinstance(event, h11.EndOfMessage)):
        return None
    return msgspec.json.decode(bytes(body))


async def breaker_summaries(
    instances: Iterable[Instance], *, timeout: float = 0.5
) -> dict[str, str]:
    """For each ops address the instances publish, its node's breakers: ``"2 open"``,
    ``"closed"`` (none open), or :data:`UNREACHABLE`.  Asked all at once."""
    addresses = sorted({i.metadata["ops"] for i in instances if i.metadata.get("ops")})
    answers = await asyncio.gather(
        *(fetch_json(address, "/status", timeout=timeout) for address in addresses)
    )
    return {address: _summary(answer) for address, answer in zip(addresses, answers, strict=True)}


def _summary(status: Any) -> str:
    try:
        return summarize(breaker["state"] for breaker in status["breakers"])
    except (TypeError, KeyError):  # None (no answer) or not the status document
        return UNREACHABLE

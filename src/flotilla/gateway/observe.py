"""The outermost layer of the gateway: a request id on every answer, and its metrics.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which would
buffer bodies and cost a task per request).  Every HTTP request gets a
request id: the client's ``X-Request-Id`` when it is a sane one (printable,
at most 128 characters), else a new one.  It is stored in the scope for the
route handler (which passes it on as the call's request id) and echoed in the
answer's ``X-Request-Id``.  Each answer is counted and timed under the name
of the route that handled it (``unmatched`` when none did).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flotilla.context import new_request_id
from flotilla.gateway.metrics import GatewayMetrics

__all__ = ["ROUTE_KEY", "Observe", "request_id_of"]

ROUTE_KEY = "flotilla.route"
"""The scope key where a handler names its route for the metrics."""
_ID_KEY = "flotilla.request_id"
_MAX_ID = 128


def request_id_of(scope: Scope) -> str:
    """The request id :class:`Observe` gave this request."""
    request_id: str = scope[_ID_KEY]
    return request_id


class Observe:
    """Wraps ``app``: request ids in and out, answers counted in ``metrics``."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_id(scope) or new_request_id()
        scope[_ID_KEY] = request_id
        status = 500  # if the app fails before it answers, the server answers 500
        echoed = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get(ROUTE_KEY, "unmatched")
            self.metrics.observe(route, status, time.perf_counter() - started)


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return _sane(value)
    return None


def _sane(value: Any) -> str | None:
    try:
        text: str = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    if 0 < len(text) <= _MAX_ID and text.isprintable() and " " not in text:
        return text
    return None

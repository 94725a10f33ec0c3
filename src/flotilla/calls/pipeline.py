"""The client pipeline: every concern is a middleware around ``async (request) -> reply``.

A middleware is ``async (request, next) -> reply``: it may change the request,
call ``next`` zero or more times, and change or replace the reply.  They are
folded once, when a caller is built, in the one order of
:data:`CLIENT_STACK`, outermost first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from flotilla.errors import ConfigError

__all__ = ["CLIENT_STACK", "Handler", "Middleware", "build_stack", "compose"]

Req = TypeVar("Req")
Handler = Callable[[Req], Awaitable[Any]]
Middleware = Callable[[Req, Handler[Req]], Awaitable[Any]]

CLIENT_STACK: tuple[str, ...] = (
    # Outermost: turns "now + timeout" into the absolute deadline that every
    # retry, backoff and attempt below must fit in, and enforces it.
    "deadline",
    # Above balancing so that a second attempt may choose another endpoint, and
    # below the deadline so that retries never outlive it.
    "retry",
    # Picks the endpoint among those the local view calls available, and keeps
    # the in-flight count and latency that the next pick weighs.
    "balance",
    # Per endpoint, so it guards the one endpoint just chosen; it hides an
    # endpoint from balancing only by making it unavailable.
    "breaker",
    # Caps concurrent calls per endpoint, after the breaker has admitted the call.
    "bulkhead",
    # Innermost: times and counts exactly what went over the wire.
    "metrics",
)


def compose(middlewares: list[Middleware[Req]], terminal: Handler[Req]) -> Handler[Req]:
    """Fold ``middlewares`` (outermost first) around ``terminal`` into one handler."""
    handler = terminal
    for middleware in reversed(middlewares):
        handler = _bind(middleware, handler)
    return handler


def _bind(middleware: Middleware[Req], next_handler: Handler[Req]) -> Handler[Req]:
    def handler(request: Req) -> Awaitable[Any]:
        return middleware(request, next_handler)

    return handler


def build_stack(
    layers: Mapping[str, Middleware[Req]],
    terminal: Handler[Req],
    order: tuple[str, ...] = CLIENT_STACK,
) -> Handler[Req]:
    """Compose the given named ``layers`` in ``order``; a name not in the order is refused."""
    unknown = set(layers) - set(order)
    if unknown:
        raise ConfigError(f"unknown pipeline layer(s) {sorted(unknown)}; known: {list(order)}")
    return compose([layers[name] for name in order if name in layers], terminal)

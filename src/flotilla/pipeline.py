"""The client pipeline: every concern is a middleware around ``async (request) -> reply``.

A middleware is ``async (request, next) -> reply``: it may pass on a changed
request, call ``next`` zero or more times, and change or replace the reply.
They are folded once, when a caller is built, in the one order of
:data:`CLIENT_STACK`, outermost first.

The stack has two tiers, split by balancing.  Layers above it
(:data:`REQUEST_LAYERS`) see a :class:`~flotilla.request.Request` and
get the encoded result (``msgspec.Raw``) back; layers below it
(:data:`ATTEMPT_LAYERS`) see each :class:`~flotilla.request.Attempt`
and get the encoded result too.

The server's stack (:data:`flotilla.runtime.dispatcher.SERVER_STACK`) is
folded the same way.  This module stands below ``calls``, ``resilience`` and
``runtime`` so that the layers each of them defines name its types without
reaching up into the caller.

A layer that must act on the caller's local view of the endpoints (a breaker
ejecting one, say) defines ``attach(directory)``: the caller calls it once,
with its :class:`~flotilla.calls.endpoints.Directory`, when it builds the stack.

::

    class Stamp:
        # Adds the caller's build to every call's metadata.

        def __call__(self, request: Request, call_next: Handler[Request]) -> Awaitable[Any]:
            request.headers = request.headers.with_meta(build="2026.11")
            return call_next(request)

    Node(Shop(), layers={"user": Stamp()})
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from flotilla.errors import ConfigError

__all__ = [
    "ATTEMPT_LAYERS",
    "CLIENT_STACK",
    "REQUEST_LAYERS",
    "Handler",
    "Middleware",
    "build_stack",
    "compose",
]

Req = TypeVar("Req")
Handler = Callable[[Req], Awaitable[Any]]
Middleware = Callable[[Req, Handler[Req]], Awaitable[Any]]

REQUEST_LAYERS: tuple[str, ...] = ("deadline", "user", "fallback", "retry")
"""Layers that see the request (once per call)."""
ATTEMPT_LAYERS: tuple[str, ...] = ("breaker", "bulkhead", "metrics")
"""Layers that see each attempt, once its endpoint is chosen."""

CLIENT_STACK: tuple[str, ...] = (
    # Outermost: turns "now + timeout" into the absolute deadline that every
    # retry, backoff and attempt below must fit in, and enforces it.
    "deadline",
    # The application's own layer (headers to add, calls to log or refuse):
    # it sees each call once, with its final deadline, whatever retries follow.
    "user",
    # Above retry, so it sees only the final outcome, after every retry and
    # requeue; below the application's layer, which sees a fallback's answer
    # as the call's answer, as the caller will.
    "fallback",
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
assert (*REQUEST_LAYERS, "balance", *ATTEMPT_LAYERS) == CLIENT_STACK


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

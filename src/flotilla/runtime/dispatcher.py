"""The callee's side of a call: find the method, validate the arguments, run it under the deadline.

Incoming calls go through the same kind of pipeline as outgoing ones
(:func:`flotilla.calls.pipeline.compose`); :data:`SERVER_STACK` is its order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flotilla import codec
from flotilla.calls.pipeline import Handler, Middleware, build_stack
from flotilla.context import Context, Invoker
from flotilla.errors import DeadlineExceeded, FlotillaError, Internal, NotFound
from flotilla.service import MethodSpec, Service
from flotilla.transport.frames import Call

__all__ = ["SERVER_STACK", "Dispatcher", "Incoming"]

log = logging.getLogger("flotilla.runtime")

SERVER_STACK: tuple[str, ...] = (
    # Outermost: work whose deadline has passed is skipped, and work that runs
    # past it is cancelled: the caller has stopped waiting.
    "deadline",
    # Observes what the handler did (the observability issue adds it).
    "metrics",
)


@dataclass(slots=True)
class Incoming:
    """A call being served, as the server pipeline's middlewares see it."""

    call: Call
    spec: MethodSpec
    context: Context
    invoke: Callable[..., Any]


class _Route:
    __slots__ = ("bound", "fields", "spec")

    def __init__(self, service: Service, spec: MethodSpec) -> None:
        self.spec = spec
        self.bound = getattr(service, spec.attribute)
        self.fields = spec.args_type.__struct_fields__


async def _enforce_deadline(incoming: Incoming, call_next: Handler[Incoming]) -> Any:
    deadline = incoming.context.deadline
    if deadline is None:
        return await call_next(incoming)
    if deadline <= asyncio.get_running_loop().time():
        raise DeadlineExceeded(f"deadline of {incoming.call.method} passed before it started")
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            return await call_next(incoming)
    except TimeoutError:
        if scope.expired():
            raise DeadlineExceeded(f"{incoming.call.method} ran past its deadline") from None
        raise


class Dispatcher:
    """Routes ``service.method`` to a hosted service's method (the transport's ``CallHandler``)."""

    def __init__(
        self,
        services: list[Service],
        invoker: Invoker,
        layers: Mapping[str, Middleware[Incoming]] | None = None,
    ) -> None:
        self.invoker = invoker
        self.routes: dict[str, _Route] = {}
        for service in services:
            for spec in service.methods().values():
                self.routes[f"{service.name}.{spec.name}"] = _Route(service, spec)
        stack = {"deadline": _enforce_deadline, **(layers or {})}
        self._run = build_stack(stack, _invoke, SERVER_STACK)

    async def __call__(self, call: Call) -> bytes:
        route = self.routes.get(call.method)
        if route is None:
            raise NotFound(f"no method {call.method!r} here")
        args = codec.decode(call.args, route.spec.args_type)
        meta = dict(call.meta) if call.meta else {}
        loop = asyncio.get_running_loop()
        context = Context(
            self.invoker,
            service=call.method.partition(".")[0],
            caller=meta.pop("from", ""),
            request_id=meta.pop("rid", None),
            deadline=None if call.timeout_ms is None else loop.time() + call.timeout_ms / 1000,
            meta=meta,
        )
        kwargs = {name: getattr(args, name) for name in route.fields}
        if route.spec.context_param is not None:
            kwargs[route.spec.context_param] = context
        result = await self._run(Incoming(call, route.spec, context, lambda: route.bound(**kwargs)))
        try:
            return codec.encode(result)
        except TypeError as exc:
            raise Internal(f"result of {call.method} cannot be encoded: {exc}") from None


async def _invoke(incoming: Incoming) -> Any:
    try:
        return await incoming.invoke()
    except (FlotillaError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("%s failed (request %s)", incoming.call.method, incoming.context.request_id)
        raise Internal(f"{incoming.call.method} failed") from None

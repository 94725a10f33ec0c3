"""The callee's side of a call: find the method, validate the arguments, run it.

The transport has already enforced the deadline's first half (a call whose
deadline passed is not started) and enforces the second (a call that runs past
it is cancelled); the dispatcher hands the deadline on in the call's
:class:`Context`, so onward calls share it.

Incoming calls go through the same kind of pipeline as outgoing ones
(:func:`flotilla.calls.pipeline.compose`); :data:`SERVER_STACK` is its order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import msgspec

from flotilla import codec
from flotilla.calls.pipeline import Middleware, build_stack
from flotilla.context import Context, Invoker
from flotilla.errors import FlotillaError, Internal, NotFound
from flotilla.service import MethodSpec, Service
from flotilla.transport.frames import Call

__all__ = ["SERVER_STACK", "Dispatcher", "Incoming"]

log = logging.getLogger("flotilla.runtime")

SERVER_STACK: tuple[str, ...] = (
    # Observes what the handler did: time, outcome (the observability work adds it).
    "metrics",
)


class Route:
    """One hosted method: the bound callable and how to lay its arguments out."""

    __slots__ = ("bound", "context_index", "keywords", "service", "spec", "target")

    def __init__(self, service: Service, spec: MethodSpec) -> None:
        self.service = service.name
        self.spec = spec
        self.target = f"{service.name}.{spec.name}"
        self.bound = getattr(service, spec.attribute)
        parameters = list(inspect.signature(self.bound).parameters.values())
        # Positional calls are cheaper than **kwargs; keyword-only parameters
        # (and only they) force the keyword layout.
        positional = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
        self.keywords = None if positional else spec.args_type.__struct_fields__
        names = [p.name for p in parameters]
        self.context_index = (
            names.index(spec.context_param) if spec.context_param is not None else None
        )

    def call(self, incoming: Incoming) -> Awaitable[Any]:
        """Call the method with the arguments of ``incoming`` (and its context, if it takes one)."""
        values = incoming.values
        if self.keywords is None:
            index = self.context_index
            if index is not None:
                values = (*values[:index], incoming.context, *values[index:])
            return self.bound(*values)  # type: ignore[no-any-return]
        kwargs = dict(zip(self.keywords, values, strict=True))
        if self.spec.context_param is not None:
            kwargs[self.spec.context_param] = incoming.context
        return self.bound(**kwargs)  # type: ignore[no-any-return]


class Incoming:
    """A call being served, as the server pipeline's middlewares see it."""

    __slots__ = ("_context", "call", "deadline", "invoker", "route", "values")

    def __init__(
        self,
        route: Route,
        values: tuple[Any, ...],
        call: Call,
        deadline: float | None,
        invoker: Invoker,
    ) -> None:
        self.route = route
        self.values = values
        """The arguments, validated, in the order of the method's argument struct."""
        self.call = call
        self.deadline = deadline
        self.invoker = invoker
        self._context: Context | None = None

    @property
    def context(self) -> Context:
        """The call's context, made on first use: most handlers never ask for it."""
        if self._context is None:
            call = self.call
            self._context = Context(
                self.invoker,
                service=self.route.service,
                caller=call.caller,
                request_id=call.request_id or None,
                deadline=self.deadline,
                meta=call.meta,
            )
        return self._context


class Dispatcher:
    """Routes ``service.method`` to a hosted service's method (the transport's ``CallHandler``)."""

    def __init__(
        self,
        services: list[Service],
        invoker: Invoker,
        layers: Mapping[str, Middleware[Incoming]] | None = None,
    ) -> None:
        self.invoker = invoker
        self.routes: dict[str, Route] = {}
        for service in services:
            for spec in service.methods().values():
                route = Route(service, spec)
                self.routes[route.target] = route
        self._run = build_stack(dict(layers or {}), _invoke, SERVER_STACK)

    async def __call__(self, call: Call, deadline: float | None) -> bytes:
        route = self.routes.get(call.method)
        if route is None:
            raise NotFound(f"no method {call.method!r} here")
        values = msgspec.structs.astuple(codec.decode(call.args, route.spec.args_type))
        result = await self._run(Incoming(route, values, call, deadline, self.invoker))
        try:
            return codec.encode(result)
        except TypeError as exc:
            raise Internal(f"result of {call.method} cannot be encoded: {exc}") from None


async def _invoke(incoming: Incoming) -> Any:
    try:
        return await incoming.route.call(incoming)
    except FlotillaError as exc:
        if exc.onward and exc.retryable:
            # "Unavailable" from a call this handler made says nothing about
            # what the handler had already done: not safe to send again.
            exc.retryable = False  # type: ignore[misc]
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        target, request_id = incoming.route.target, incoming.context.request_id
        log.exception("%s failed (request %s)", target, request_id)
        raise Internal(f"{target} failed") from None

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
import difflib
import inspect
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import msgspec

from flotilla import codec
from flotilla.calls.pipeline import Middleware, build_stack
from flotilla.context import Context, Emitter, Invoker
from flotilla.errors import FlotillaError, Internal, Unavailable, Unimplemented
from flotilla.headers import Headers
from flotilla.service import MethodSpec, Service

__all__ = ["SERVER_STACK", "Dispatcher", "Incoming"]

log = logging.getLogger("flotilla.runtime")

SERVER_STACK: tuple[str, ...] = (
    # Outermost: times and counts every call, those refused below included.
    "metrics",
    # The application's own layer (an authorisation check on the principal,
    # say): it sees the call before the callee spends anything on it.
    "user",
    # Innermost: caps the calls running at once, so overload is refused
    # cheaply, after the layers that must see every call.
    "bulkhead",
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
    """A call being served, as the server pipeline's layers see it.

    Layers run before routing and decoding, so they see every call, including
    those that fail as ``unimplemented`` or ``invalid_argument``; ``route`` and
    ``values`` are filled in by the innermost step.
    """

    __slots__ = ("_context", "args", "emitter", "headers", "invoker", "route", "target", "values")

    def __init__(
        self,
        target: str,
        args: msgspec.Raw,
        headers: Headers,
        invoker: Invoker,
        emitter: Emitter | None = None,
    ) -> None:
        self.target = target
        self.emitter = emitter
        """``service.method`` as the caller named it."""
        self.args = args
        """The arguments, still encoded."""
        self.headers = headers
        """As received, the deadline made absolute (``time.monotonic()``)."""
        self.invoker = invoker
        self.route: Route | None = None
        self.values: tuple[Any, ...] = ()
        """The arguments, validated, in the order of the method's argument struct."""
        self._context: Context | None = None

    @property
    def service(self) -> str:
        return self.target.partition(".")[0]

    @property
    def deadline(self) -> float | None:
        return self.headers.deadline

    @property
    def context(self) -> Context:
        """The call's context, made on first use: most handlers never ask for it."""
        if self._context is None:
            self._context = Context(
                self.invoker, self.headers, service=self.service, emitter=self.emitter
            )
        return self._context


class Dispatcher:
    """Serves the calls of the transport: the server stack, then routing, decoding and the method.

    It is the transport's ``CallHandler``.
    """

    def __init__(
        self,
        services: list[Service],
        invoker: Invoker,
        layers: Mapping[str, Middleware[Incoming]] | None = None,
        *,
        emitter: Emitter | None = None,
    ) -> None:
        self.invoker = invoker
        self.emitter = emitter
        self.routes: dict[str, Route] = {}
        self._methods: dict[str, list[str]] = {}
        for service in services:
            self._methods[service.name] = sorted(service.methods())
            for spec in service.methods().values():
                route = Route(service, spec)
                self.routes[route.target] = route
        self._run = build_stack(dict(layers or {}), self._serve, SERVER_STACK)

    def __call__(self, target: str, args: msgspec.Raw, headers: Headers) -> Awaitable[bytes]:
        return self._run(Incoming(target, args, headers, self.invoker, self.emitter))

    async def _serve(self, incoming: Incoming) -> bytes:
        """The innermost step: route, decode, run, encode (one coroutine: it runs per call)."""
        route = incoming.route = self.routes.get(incoming.target) or self._unrouted(incoming)
        incoming.values = msgspec.structs.astuple(codec.decode(incoming.args, route.spec.args_type))
        try:
            result = await route.call(incoming)
        except FlotillaError as exc:
            if exc.onward and exc.retryable:
                # "Unavailable" from a call this handler made says nothing about
                # what the handler had already done: not safe to send again.
                exc.retryable = False  # type: ignore[misc]
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            raise _internal(incoming) from None
        try:
            return codec.encode(result)
        except (TypeError, ValueError, OverflowError) as exc:
            raise Internal(f"result of {incoming.target} cannot be encoded: {exc}") from None

    def _unrouted(self, incoming: Incoming) -> Route:
        service, _, method = incoming.target.partition(".")
        methods = self._methods.get(service)
        if methods is None:
            # A stale view of the registry sent it here; nothing was done.
            raise Unavailable(f"service {service!r} is not served at this address")
        close = difflib.get_close_matches(method, methods, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise Unimplemented(
            f"service {service!r} has no method {method!r}{hint} "
            f"(its methods: {', '.join(methods) or 'none'})"
        )


def _internal(incoming: Incoming) -> Internal:
    """What the caller learns of an unexpected exception: its request id, to find the
    traceback this logs."""
    request_id = incoming.headers.request_id
    log.exception("%s failed (request %s)", incoming.target, request_id)
    return Internal(
        f"{incoming.target} failed (request {request_id}: its log has the traceback)",
        details={"request_id": request_id},
    )

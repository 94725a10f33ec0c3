"""The callee's side of a call: find the method, validate the arguments, run it.

The transport has already enforced the deadline's first half (a call whose
deadline passed is not started) and enforces the second (a call that runs past
it is cancelled); the dispatcher hands the deadline on in the call's
:class:`Context`, so onward calls share it.

Incoming calls go through the same kind of pipeline as outgoing ones
(:func:`flotilla.pipeline.compose`); :data:`SERVER_STACK` is its order.
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
from flotilla.context import Context, Emitter, Invoker
from flotilla.errors import FlotillaError, Internal, Unavailable, Unimplemented
from flotilla.headers import Headers
from flotilla.pipeline import Middleware, build_stack
from flotilla.service import MethodSpec, Service

__all__ = ["SERVER_STACK", "Dispatcher", "Incoming"]

log = logging.getLogger("flotilla.runtime")

SERVER_STACK: tuple[str, ...] = (
    # Outermost: times and counts every call, those refused below included.
    "metrics",
    # The application's own layer (an authorisation check on the principal,
    # say): it sees the call before the callee spends anything on it.
    "user",
    # Caps the calls running at once per method, so overload is refused
    # cheaply, after the layers that must see every call.
    "bulkhead",
    # Innermost, standing in for the method (injected delays, errors, cut
    # connections): a delayed call holds its bulkhead slot as a slow method
    # would, and metrics count an injected failure as the method's own.
    "faults",
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

    Layers run before decoding, so they see every call, including those that
    fail as ``unimplemented`` or ``invalid_argument``.  ``route`` is the hosted
    method, found before the layers run (None: this node does not serve the
    target, and the call fails at once); ``values`` are filled in by the
    innermost step.
    """

    __slots__ = ("_context", "args", "emitter", "headers", "invoker", "route", "target", "values")

    def __init__(
        self,
        target: str,
        args: msgspec.Raw,
        headers: Headers,
        invoker: Invoker,
        route: Route | None = None,
        emitter: Emitter | None = None,
    ) -> None:
        self.target = target
        """``service.method`` as the caller named it."""
        self.emitter = emitter
        self.args = args
        """The arguments, still encoded."""
        self.headers = headers
        """As received, the deadline made absolute (``time.monotonic()``)."""
        self.invoker = invoker
        self.route = route
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
        route = self.routes.get(target)
        return self._run(Incoming(target, args, headers, self.invoker, route, self.emitter))

    async def _serve(self, incoming: Incoming) -> bytes:
        """The innermost step: route, decode, run, encode (one coroutine: it runs per call)."""
        route = incoming.route or self._unrouted(incoming)
        incoming.values = msgspec.structs.astuple(codec.decode(incoming.args, route.spec.args_type))
        try:
            result = await route.call(incoming)
        except FlotillaError as exc:
            if exc.onward and exc.retryable:
                # "Unavailable" from a call this handler made says nothing about
                # what the handler had already done: not safe to send again.
                exc.retryable = False  # type: ignore[misc]
            if not exc.retried and _after_retries(exc):
                exc.retried = True
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            internal = _internal(incoming)
            internal.retried = _after_retries(exc)
            raise internal from None
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


def _after_retries(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling an onward failure that retries were already
    spent on (``raise Unavailable("no stock") from error``, or a bug in an ``except`` block).

    Such a failure is marked ``retried`` too, so that the callers above do not
    retry it: the hop nearest the fault has (see :mod:`flotilla.resilience.retry`).
    """
    seen = 0
    cause = exc.__cause__ or exc.__context__
    while cause is not None and seen < 8:  # a short walk: chains are shallow
        if isinstance(cause, FlotillaError) and cause.retried:
            return True
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return False


def _internal(incoming: Incoming) -> Internal:
    """What the caller learns of an unexpected exception: its request id, to find the
    traceback this logs."""
    request_id = incoming.headers.request_id
    log.exception("%s failed (request %s)", incoming.target, request_id)
    return Internal(
        f"{incoming.target} failed (request {request_id}: its log has the traceback)",
        details={"request_id": request_id},
    )

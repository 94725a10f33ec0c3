"""The caller: builds the client pipeline once and sends calls through it.

::

    caller = Caller(registry, secret=b"...")
    await caller.invoke("catalog.get", {"id": 1}, context=ctx)
    await caller.client(Catalog, context=ctx).get(id=1)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec

from flotilla import codec
from flotilla.balancing import DEFAULT_STRATEGY, Strategy
from flotilla.calls.balance import Balance
from flotilla.calls.deadline import DEFAULT_TIMEOUT, Deadline
from flotilla.calls.endpoints import Directory
from flotilla.calls.pipeline import Middleware, build_stack
from flotilla.calls.request import Request
from flotilla.context import Context, new_request_id
from flotilla.errors import FlotillaError, Internal, InvalidArgument, Unavailable
from flotilla.registry import Registry
from flotilla.service import MethodSpec, Service
from flotilla.transport.client import Connection, ConnectionPool

__all__ = ["Caller", "TypedClient", "split_target"]

S = TypeVar("S", bound=Service)


def split_target(target: str) -> tuple[str, str]:
    """``"catalog.get"`` -> ``("catalog", "get")``; anything else is an ``InvalidArgument``."""
    service, dot, method = target.partition(".")
    if not (service and dot and method):
        raise InvalidArgument(f"call target {target!r} is not 'service.method'")
    return service, method


class Caller:
    """Sends calls: deadline -> (resilience layers) -> balance -> transport.

    ``strategy`` balances calls to every service, except those ``strategies``
    names (``{"carts": "consistent_hash:cart_id"}``).  ``layers`` adds named
    middlewares (``retry``, ``breaker``, ``bulkhead``, ``metrics``); they take
    the place :data:`~flotilla.calls.pipeline.CLIENT_STACK` gives them,
    whatever order they are passed in.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        secret: bytes,
        strategy: str | Strategy = DEFAULT_STRATEGY,
        strategies: Mapping[str, str | Strategy] | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        layers: Mapping[str, Middleware[Request]] | None = None,
    ) -> None:
        self.directory = Directory(registry)
        self.pool = ConnectionPool(secret, on_lost=self.directory.mark_down)
        stack: dict[str, Middleware[Request]] = {
            "deadline": Deadline(default_timeout),
            "balance": Balance(self.directory, strategy, strategies),
            **(layers or {}),
        }
        self._send = build_stack(stack, self._transmit)
        self._targets: dict[str, tuple[str, str]] = {}  # "svc.method" -> its two parts

    async def invoke(
        self,
        target: str,
        args: dict[str, Any],
        *,
        context: Context | None,
        result_type: Any = Any,
        spec: MethodSpec | None = None,
    ) -> Any:
        """Call ``target`` with ``args`` for ``context``; decode the result into ``result_type``.

        With no context the call starts a chain of its own: a new request id,
        no caller, no deadline but the default timeout.
        """
        service, method = self._targets.get(target) or self._split(target)
        if context is None:
            request = Request(
                service=service, method=method, args=args, request_id=new_request_id()
            )
        else:
            request = Request(
                service=service,
                method=method,
                args=args,
                request_id=context.request_id,
                caller=context.service,
                meta=context.meta,
                deadline=context.deadline,
            )
        if spec is not None:
            request.timeout = spec.timeout
            request.idempotent = spec.idempotent
        try:
            raw = await self._send(request)
        except FlotillaError as exc:
            exc.onward = True
            raise
        try:
            return codec.decode(raw, result_type)
        except InvalidArgument as exc:
            raise Internal(f"result of {target} does not match its type: {exc.message}") from None

    def _split(self, target: str) -> tuple[str, str]:
        parts = self._targets[target] = split_target(target)
        return parts

    def client(self, service: type[S], *, context: Context) -> TypedClient[S]:
        return TypedClient(self, service, context)

    def _transmit(self, request: Request) -> Awaitable[msgspec.Raw]:
        """The end of the pipeline: one attempt on the endpoint balancing chose."""
        assert request.endpoint is not None, "balance must run before the transport"
        connection = self.pool.connected(request.endpoint.address)
        if connection is None:
            return self._connect_and_transmit(request)
        return _call_on(connection, request)

    async def _connect_and_transmit(self, request: Request) -> msgspec.Raw:
        assert request.endpoint is not None
        address = request.endpoint.address
        started = time.monotonic()
        try:
            connection = await self.pool.get(address, deadline=request.deadline)
        except Unavailable:
            self.directory.mark_down(address)
            raise
        request.connect_seconds = time.monotonic() - started
        return await _call_on(connection, request)

    async def aclose(self) -> None:
        """Stop watching the registry and close connections; idempotent."""
        await self.directory.aclose()
        await self.pool.aclose()


def _call_on(connection: Connection, request: Request) -> Awaitable[msgspec.Raw]:
    return connection.call(
        request.target,
        codec.encode(request.args),
        deadline=request.deadline,
        request_id=request.request_id,
        caller=request.caller,
        meta=request.meta or None,
    )


class TypedClient(Generic[S]):
    """Calls the ``@rpc`` methods of a service class by attribute; results come back typed.

    Positional arguments map to the method's parameters in order.
    """

    def __init__(self, caller: Caller, service: type[S], context: Context) -> None:
        self._caller = caller
        self._service = service
        self._context = context
        self._by_attribute = {spec.attribute: spec for spec in service.methods().values()}

    def __getattr__(self, attribute: str) -> Callable[..., Awaitable[Any]]:
        spec = self._by_attribute.get(attribute)
        if spec is None:
            raise AttributeError(f"{self._service.__name__} has no @rpc method {attribute!r}")
        target = f"{self._service.name}.{spec.name}"
        fields = spec.args_type.__struct_fields__

        async def call(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(fields):
                raise InvalidArgument(f"{target} takes at most {len(fields)} positional arguments")
            kwargs.update(zip(fields, args, strict=False))
            return await self._caller.invoke(
                target, kwargs, context=self._context, result_type=spec.result_type, spec=spec
            )

        return call

"""The caller: builds the client pipeline once and sends calls through it.

::

    caller = Caller(registry, secret=b"...")
    await caller.invoke("catalog.get", {"id": 1}, context=ctx)
    await TypedClient(caller, Catalog, ctx).get(id=1)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import Any

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
from flotilla.service import MethodSpec
from flotilla.transport.client import Connection, ConnectionPool

__all__ = ["Caller", "split_target"]


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

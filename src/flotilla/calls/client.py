"""The caller: builds the client pipeline once and sends calls through it.

::

    caller = Caller(registry, secret=b"...")
    await caller.invoke("catalog.get", {"id": 1}, context=ctx)
    await TypedClient(caller, Catalog, ctx).get(id=1)

The pipeline, outermost first (:data:`~flotilla.pipeline.CLIENT_STACK`)::

    request tier:  deadline -> user -> fallback -> retry ->
    balance:       choose an endpoint, one Attempt per try, requeue what never left ->
    attempt tier:  breaker -> bulkhead -> metrics -> transport
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
from flotilla.context import Context, new_request_id
from flotilla.errors import ConfigError, FlotillaError, Internal, InvalidArgument, Unavailable
from flotilla.headers import Headers
from flotilla.pipeline import (
    ATTEMPT_LAYERS,
    CLIENT_STACK,
    REQUEST_LAYERS,
    Middleware,
    build_stack,
)
from flotilla.registry import Registry
from flotilla.registry.base import MethodInfo
from flotilla.request import Attempt, Request
from flotilla.resilience.policy import Policy, PolicyLookup
from flotilla.resilience.signals import Signals
from flotilla.service import MethodSpec
from flotilla.transport.pool import ConnectionPool

__all__ = ["Caller", "split_target"]


def split_target(target: str) -> tuple[str, str]:
    """``"catalog.get"`` -> ``("catalog", "get")``; anything else is an ``InvalidArgument``."""
    service, dot, method = target.partition(".")
    if not (service and dot and method):
        raise InvalidArgument(f"call target {target!r} is not 'service.method'")
    return service, method


class Caller:
    """Sends calls through the client pipeline (see the module docstring).

    ``strategy`` balances calls to every service, except those ``strategies``
    names (``{"carts": "consistent_hash:cart_id"}``).  ``layers`` adds named
    middlewares (``user``, ``fallback``, ``retry``, ``breaker``, ``bulkhead``,
    ``metrics``); they take the place :data:`~flotilla.pipeline.CLIENT_STACK`
    gives them, whatever order they are passed in.  A layer with an ``attach``
    method is given the caller's :class:`Directory` once, before any call.
    ``policies`` and ``signals`` go to balancing (its panic threshold, its
    panic signal).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        secret: bytes,
        strategy: str | Strategy = DEFAULT_STRATEGY,
        strategies: Mapping[str, str | Strategy] | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        layers: Mapping[str, Middleware[Any]] | None = None,
        policies: PolicyLookup | None = None,
        signals: Signals | None = None,
    ) -> None:
        layers = dict(layers or {})
        # The caller makes its deadline and balance layers itself.
        settable = [name for name in CLIENT_STACK if name not in ("deadline", "balance")]
        unknown = set(layers) - set(settable)
        if unknown:
            raise ConfigError(f"unknown client layer(s) {sorted(unknown)}; known: {settable}")
        self.directory = Directory(registry)
        self.pool = ConnectionPool(secret, on_lost=self.directory.mark_down)
        self.default_timeout = default_timeout
        for layer in layers.values():
            attach = getattr(layer, "attach", None)
            if attach is not None:
                attach(self.directory)
        attempts = build_stack(
            {name: layers[name] for name in ATTEMPT_LAYERS if name in layers},
            self._transmit,
            ATTEMPT_LAYERS,
        )
        self.balance = Balance(
            self.directory, attempts, strategy, strategies, policies=policies, signals=signals
        )
        request_layers = {name: layers[name] for name in REQUEST_LAYERS if name in layers}
        self._send = build_stack(
            {"deadline": Deadline(default_timeout), **request_layers},
            self.balance,
            REQUEST_LAYERS,
        )
        self._targets: dict[str, tuple[str, str]] = {}  # "svc.method" -> its two parts

    async def invoke(
        self,
        target: str,
        args: dict[str, Any],
        *,
        context: Context | None,
        result_type: Any = Any,
        spec: MethodSpec | None = None,
        policy: Policy | None = None,
    ) -> Any:
        """Call ``target`` with ``args`` for ``context``; decode the result into ``result_type``.

        ``policy``: the resilience policy of this one call (``Request.policy``).

        With no context the call starts a chain of its own: a new request id,
        no caller, no deadline but the method's timeout or the default one.
        Without ``spec`` the method's options (timeout, idempotent) come from
        the method table its instances publish.
        """
        service, method = self._targets.get(target) or self._split(target)
        # Encoded first: an argument that cannot travel fails here, naming it,
        # before any layer counts the call.
        payload = codec.encode_args(args)
        if context is None:
            headers = Headers(request_id=new_request_id())
        else:
            headers = context.onward_headers()
        options: MethodSpec | MethodInfo | None = spec
        if options is None:
            headers, options = await self._by_name(service, method, headers)
        request = Request(service, method, args, headers, payload=payload, policy=policy)
        if options is not None:
            request.timeout = options.timeout
            request.idempotent = options.idempotent
        try:
            raw = await self._send(request)
        except FlotillaError as exc:
            exc.onward = True
            raise
        try:
            return codec.decode(raw, result_type)
        except InvalidArgument as exc:
            raise Internal(f"result of {target} does not match its type: {exc.message}") from None

    async def _by_name(
        self, service: str, method: str, headers: Headers
    ) -> tuple[Headers, MethodInfo | None]:
        """The method's options as its service publishes them (None if it publishes none)."""
        endpoints = self.directory.get(service)
        if endpoints is not None:
            return headers, endpoints.methods.get(method)
        # The first call to this service: its view must be opened first.  A
        # root call's time starts now, not once the view is open, so its
        # deadline is fixed here from the method's timeout (the deadline
        # layer only ever shortens one).
        started = time.monotonic()
        endpoints = await self.directory.open(service, deadline=headers.deadline)
        info = endpoints.methods.get(method)
        if headers.deadline is None:
            timeout = info.timeout if info is not None else None
            headers = headers.replace(
                deadline=started + (timeout if timeout is not None else self.default_timeout)
            )
        return headers, info

    def _split(self, target: str) -> tuple[str, str]:
        parts = self._targets[target] = split_target(target)
        return parts

    def _transmit(self, attempt: Attempt) -> Awaitable[msgspec.Raw]:
        """The end of the pipeline: one attempt on the endpoint balancing chose."""
        connection = self.pool.connected(attempt.endpoint.address)
        if connection is None:
            return self._connect_and_transmit(attempt)
        request = attempt.request
        return connection.call(request.target, request.payload, request.headers)

    async def _connect_and_transmit(self, attempt: Attempt) -> msgspec.Raw:
        address = attempt.endpoint.address
        started = time.monotonic()
        try:
            connection = await self.pool.get(address, deadline=attempt.deadline)
        except Unavailable:
            self.directory.mark_down(address)
            raise
        attempt.connect_seconds = time.monotonic() - started
        request = attempt.request
        return await connection.call(request.target, request.payload, request.headers)

    async def aclose(self) -> None:
        """Stop watching the registry and close connections; idempotent."""
        await self.directory.aclose()
        await self.pool.aclose()

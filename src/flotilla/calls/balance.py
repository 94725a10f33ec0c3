"""The balancing middleware: choose an endpoint, and keep the load figures that choices weigh."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from flotilla.balancing import Endpoint, Strategy, resolve_strategy
from flotilla.calls.endpoints import Directory
from flotilla.calls.pipeline import Handler
from flotilla.calls.request import Request
from flotilla.errors import ConnectFailed, DeadlineExceeded, Internal, Unavailable

__all__ = ["MAX_REQUEUES", "Balance"]

# A call that could not even be sent (no connection) goes to another endpoint
# at once.  Bounded, so a caller cut off from every replica fails fast.
MAX_REQUEUES = 2
# Failures that speak of the endpoint rather than of the request (a not_found is
# a fine, fast answer; an internal error or a refusal is not).
_ENDPOINT_FAULTS = (Unavailable, Internal, DeadlineExceeded)


class Balance:
    """Sets ``request.endpoint`` to the strategy's pick among the available endpoints.

    A service with no available endpoint fails at once with ``Unavailable``
    naming it: waiting would only spend the caller's deadline.  A pick that
    turns out unreachable (:class:`ConnectFailed`) is replaced by another pick,
    never the same endpoint twice; that is safe because nothing was sent.

    Each service gets a strategy of its own (``overrides`` by service name,
    else ``default``): strategies keep state, a counter or a hash ring, that
    means nothing across services.
    """

    def __init__(
        self,
        directory: Directory,
        default: str | Strategy,
        overrides: Mapping[str, str | Strategy] | None = None,
    ) -> None:
        self.directory = directory
        self._specs = dict(overrides or {})
        self._default = default
        for spec in (default, *self._specs.values()):
            resolve_strategy(spec)  # a bad name fails here, at build time
        self._strategies: dict[str, Strategy] = {}

    def strategy(self, service: str) -> Strategy:
        strategy = self._strategies.get(service)
        if strategy is None:
            spec = self._specs.get(service, self._default)
            strategy = self._strategies[service] = resolve_strategy(spec)
        return strategy

    async def __call__(self, request: Request, call_next: Handler[Request]) -> Any:
        service = request.service
        endpoints = self.directory.get(service) or await self.directory.open(
            service, deadline=request.deadline
        )
        strategy = self._strategies.get(service) or self.strategy(service)
        tried: list[Endpoint] = []
        while True:
            available = endpoints.pick_list()
            if tried:
                available = tuple(e for e in available if e not in tried)
            if not available:
                raise Unavailable(f"no live instance of service {service!r}")
            endpoint = request.endpoint = strategy.select(available, request)
            endpoint.inflight += 1
            request.connect_seconds = 0.0
            started = time.monotonic()
            unreachable = penalty = False
            try:
                return await call_next(request)
            except ConnectFailed:
                unreachable = True
                if len(tried) == MAX_REQUEUES:
                    raise
                tried.append(endpoint)
            except _ENDPOINT_FAULTS:
                penalty = True
                raise
            finally:
                if unreachable:
                    endpoint.inflight -= 1  # nothing was sent: no latency to learn from
                else:
                    self._observe(endpoint, started, request.connect_seconds, penalty)

    @staticmethod
    def _observe(endpoint: Endpoint, started: float, connect: float, penalty: bool) -> None:
        endpoint.inflight -= 1
        now = time.monotonic()
        seconds = now - started - connect
        if penalty:
            # A replica that fails fast must not look fast: count a failure as
            # twice the worse of its time and the current average.
            seconds = 2 * max(seconds, endpoint.latency(now))
        endpoint.record(seconds, now)

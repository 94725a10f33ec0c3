"""The balancing layer: turn a request into attempts on chosen endpoints, and keep the load
figures that the next choice weighs.

It stands between the two tiers of the client pipeline: above it layers see the
request, below it each :class:`~flotilla.calls.request.Attempt`.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping

import msgspec

from flotilla.balancing import Endpoint, Strategy, resolve_strategy
from flotilla.calls.endpoints import Directory, EndpointSet
from flotilla.calls.pipeline import Handler
from flotilla.calls.request import Attempt, Request
from flotilla.errors import DeadlineExceeded, FlotillaError, Internal, Unavailable

__all__ = ["Balance"]

# Failures that speak of the endpoint rather than of the request (a not_found is
# a fine, fast answer; an internal error or a refusal is not).
_ENDPOINT_FAULTS = (Unavailable, Internal, DeadlineExceeded)


class Balance:
    """Sends each request to the strategy's pick among the available endpoints.

    A service with no available endpoint fails at once with ``Unavailable``
    naming it: waiting would only spend the caller's deadline.  An attempt that
    failed without leaving this process (``error.never_sent``: no connection,
    a refused handshake, an open breaker, a full local bulkhead) is *requeued*:
    the request goes to another endpoint at once, never to the same one twice,
    and it costs no retry budget since nothing was sent.  Whoever refused the
    attempt (the transport, a breaker) ejects the endpoint from the local view.

    No failure makes an endpoint look cheaper: a failure that was sent counts
    as twice the worse of its time and the endpoint's average; one that never
    left records nothing.

    Each service gets a strategy of its own (``overrides`` by service name,
    else ``default``): strategies keep state, a counter or a hash ring, that
    means nothing across services.
    """

    def __init__(
        self,
        directory: Directory,
        attempt: Handler[Attempt],
        default: str | Strategy,
        overrides: Mapping[str, str | Strategy] | None = None,
    ) -> None:
        self.directory = directory
        self._attempt = attempt
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

    async def __call__(self, request: Request) -> msgspec.Raw:
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
                raise await self._none_available(endpoints, tried)
            avoid = request.tried
            if avoid:
                # A retry or hedge: another endpoint than before, if there is one.
                available = _untried(available, avoid)
            endpoint = strategy.select(available, request)
            if avoid is not None:
                avoid.add(endpoint.id)
            attempt = Attempt(request, endpoint, len(tried) + 1)
            endpoint.inflight += 1
            started = time.monotonic()
            try:
                payload: msgspec.Raw = await self._attempt(attempt)
            except FlotillaError as exc:
                endpoint.inflight -= 1
                if exc.never_sent:
                    tried.append(endpoint)  # nothing to learn of its latency
                    continue
                if request.tried is None:
                    request.tried = {endpoint.id}  # a retry will prefer another endpoint
                if isinstance(exc, _ENDPOINT_FAULTS):
                    _penalise(endpoint, started)
                else:
                    _observe(endpoint, started, attempt.connect_seconds)
                raise
            except BaseException:
                endpoint.inflight -= 1  # cancelled: the answer never came
                raise
            endpoint.inflight -= 1
            _observe(endpoint, started, attempt.connect_seconds)
            return payload

    async def _none_available(self, endpoints: EndpointSet, tried: list[Endpoint]) -> Exception:
        service = endpoints.service
        if tried:
            return Unavailable(
                f"no instance of service {service!r} took the call: "
                f"{len(tried)} tried, none reachable",
                never_sent=True,
            )
        if endpoints.endpoints:
            reasons = sorted({e.reason for e in endpoints.ejected.values()} or {"unhealthy"})
            return Unavailable(
                f"no available instance of service {service!r}: "
                f"{len(endpoints.endpoints)} registered, all {', '.join(reasons)}",
                never_sent=True,
            )
        known = [name for name in await self.directory.known_services() if name != service]
        hint = ""
        close = difflib.get_close_matches(service, known, n=1)
        if close:
            hint = f"; did you mean {close[0]!r}?"
        if known:
            hint += f" (services known: {', '.join(known)})"
        return Unavailable(f"no live instance of service {service!r}{hint}", never_sent=True)


def _untried(available: tuple[Endpoint, ...], tried: set[str]) -> tuple[Endpoint, ...]:
    """The endpoints not in ``tried``; all of them if every one was (a retry may go back)."""
    fresh = tuple(e for e in available if e.id not in tried)
    return fresh or available


def _observe(endpoint: Endpoint, started: float, connect: float) -> None:
    now = time.monotonic()
    endpoint.record(now - started - connect, now)


def _penalise(endpoint: Endpoint, started: float) -> None:
    # A replica that fails fast must not look fast: count a failure as twice
    # the worse of its time and the current average.
    now = time.monotonic()
    endpoint.record(2 * max(now - started, endpoint.latency(now)), now)

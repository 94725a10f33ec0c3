"""The balancing layer: turn a request into attempts on chosen endpoints, and keep the load
figures that the next choice weighs.

It stands between the two tiers of the client pipeline: above it layers see the
request, below it each :class:`~flotilla.request.Attempt`.
"""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Mapping

import msgspec

from flotilla.balancing import Endpoint, Strategy, resolve_strategy
from flotilla.calls.endpoints import Directory, EndpointSet
from flotilla.errors import (
    ConnectFailed,
    DeadlineExceeded,
    FlotillaError,
    Internal,
    ResourceExhausted,
    Unavailable,
)
from flotilla.pipeline import Handler
from flotilla.request import Attempt, Request
from flotilla.resilience.policy import PolicyLookup, uniform
from flotilla.resilience.signals import SignalKind, Signals

__all__ = ["Balance"]

# Failures that speak of the endpoint rather than of the request (a not_found is
# a fine, fast answer; an internal error or a refusal is not).  A callee that
# shed the call (resource_exhausted: its bulkhead is full) answers fast exactly
# because it is overloaded: counted as fast, it would draw yet more calls.
_ENDPOINT_FAULTS = (Unavailable, Internal, DeadlineExceeded, ResourceExhausted)


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

    *Panic*: when more than the service's ``Policy.panic_threshold`` of its
    endpoints are ejected or unhealthy, the strategy chooses among all of them
    (but those no connection reaches; see
    :attr:`~flotilla.calls.endpoints.EndpointSet.panic_list`) rather than pile
    the load onto the few left; ``signals`` hears ``balance.panic`` once each
    time a service enters panic.  Panic lifts ejections, not breakers: an
    endpoint whose breaker is open still refuses the attempt below this layer,
    which requeues it at once (nothing was sent), so panic never sends a call
    through an open breaker, and when every breaker is open the caller still
    gets ``unavailable`` at once.  A threshold of 1.0 turns panic off.
    """

    def __init__(
        self,
        directory: Directory,
        attempt: Handler[Attempt],
        default: str | Strategy,
        overrides: Mapping[str, str | Strategy] | None = None,
        *,
        policies: PolicyLookup | None = None,
        signals: Signals | None = None,
    ) -> None:
        self.directory = directory
        self._policies = policies or uniform()
        self._signals = signals
        self._panicking: set[str] = set()
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
        threshold = (request.policy or self._policies(service)).panic_threshold
        tried: list[Endpoint] = []
        refusals: list[str] = []
        while True:
            available = self._candidates(endpoints, threshold, tried, request)
            if not available:
                raise await self._none_available(endpoints, refusals)
            endpoint = strategy.select(available, request)
            if request.tried is not None:
                request.tried.add(endpoint.id)
            attempt = Attempt(request, endpoint, len(tried) + 1)
            endpoint.inflight += 1
            started = time.monotonic()
            try:
                payload: msgspec.Raw = await self._attempt(attempt)
            except FlotillaError as exc:
                endpoint.inflight -= 1
                if exc.never_sent:
                    tried.append(endpoint)  # nothing to learn of its latency
                    refusals.append(_refusal(exc))
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

    def _candidates(
        self,
        endpoints: EndpointSet,
        threshold: float,
        tried: list[Endpoint],
        request: Request,
    ) -> tuple[Endpoint, ...]:
        """What the strategy may choose from for the next attempt (empty: nothing left)."""
        available = endpoints.pick_list()
        if endpoints.shortfall > threshold:
            available = self._panic(endpoints)
        else:
            self._panicking.discard(endpoints.service)
        if tried:  # those that refused this call already
            available = tuple(e for e in available if e not in tried)
        if available and request.tried:
            # A retry or hedge: another endpoint than before, if there is one.
            available = _untried(available, request.tried)
        return available

    def _panic(self, endpoints: EndpointSet) -> tuple[Endpoint, ...]:
        service = endpoints.service
        if service not in self._panicking:
            self._panicking.add(service)
            if self._signals is not None:
                detail = {
                    "registered": len(endpoints.endpoints),
                    "available": len(endpoints.available),
                    "offered": len(endpoints.panic_list),
                }
                self._signals.emit(SignalKind.PANIC, service, detail=detail)
        return endpoints.panic_list

    async def _none_available(self, endpoints: EndpointSet, refusals: list[str]) -> Exception:
        service = endpoints.service
        if refusals:
            counted = Counter(refusals)
            why = ", ".join(f"{reason}: {count}" for reason, count in counted.items())
            return Unavailable(
                f"no instance of service {service!r} took the call: "
                f"{len(refusals)} tried, none took it ({why})",
                never_sent=True,
                details={"refusals": dict(counted)},  # for a layer above: all breakers open?
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


def _refusal(error: FlotillaError) -> str:
    """Why an attempt never left: the refusing layer's word (a breaker's), else the transport's."""
    refusal = error.details.get("refusal")
    if isinstance(refusal, str):
        return refusal
    return "unreachable" if isinstance(error, ConnectFailed) else error.message


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

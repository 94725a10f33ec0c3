"""The breaker layer: one circuit breaker per endpoint (or per endpoint and method) of a caller.

It stands in the ``breaker`` slot of the attempt tier
(:data:`~flotilla.pipeline.ATTEMPT_LAYERS`): balancing has chosen an
endpoint, and this layer asks that endpoint's :class:`~.breaker.Breaker`
whether the attempt may go.  A refused attempt raises ``Unavailable`` with
``never_sent=True``, so balancing sends it to another endpoint at once; when
every endpoint refuses, the caller gets ``unavailable`` at once, its message
naming the open breakers.

Attached to the caller's :class:`~flotilla.calls.endpoints.Directory`, the
layer also takes an endpoint whose breaker opens out of balancing until its
open time is over (reason ``"breaker open"``), so calls stop going to it
rather than being refused one by one; the first call after that finds the
breaker half-open and probes.  A per-method breaker ejects nothing: the
endpoint's other methods may be fine.

Every transition is a signal in the node's :class:`~.signals.Signals` hub
(``breaker.*``, ``endpoint.ejected``, ``endpoint.restored``): ``/status``,
``flotilla ps`` and the ``flotilla run`` table read those
(:mod:`flotilla.resilience.states`).

::

    breakers = Breakers(policies, signals, clock)
    Node(Shop(), layers={"breaker": breakers})
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from flotilla.clock import Clock, SystemClock
from flotilla.errors import Unavailable
from flotilla.pipeline import Handler
from flotilla.request import Attempt
from flotilla.resilience.breaker import Breaker, Transition, outcome_of
from flotilla.resilience.policy import BreakerPolicy, PolicyLookup
from flotilla.resilience.signals import SignalKind, Signals

if TYPE_CHECKING:
    from flotilla.balancing import Endpoint
    from flotilla.calls.endpoints import Directory

__all__ = ["BREAKER_OPEN", "Breakers"]

BREAKER_OPEN = "breaker open"
"""The reason an open breaker ejects its endpoint with, and its refusals' ``details["refusal"]``."""
FORCED_OPEN = "breaker forced open"

Key = tuple[str, str, str | None]
"""(service, endpoint id, method or None for a per-endpoint breaker)."""


class _Guard:
    """A breaker and the endpoint it guards."""

    __slots__ = ("breaker", "endpoint", "key", "mode")

    breaker: Breaker

    def __init__(self, key: Key, endpoint: Endpoint) -> None:
        self.key = key
        self.endpoint = endpoint
        # The policy's state at the last call: a transition reads it (metrics_only ejects nothing).
        self.mode = "auto"


class Breakers:
    """The ``breaker`` middleware (see the module docstring)."""

    def __init__(
        self,
        policies: PolicyLookup,
        signals: Signals,
        clock: Clock | None = None,
        *,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self._policies = policies
        self._signals = signals
        self._clock = clock or SystemClock()
        self._random = random_source
        self._guards: dict[Key, _Guard] = {}
        self._directory: Directory | None = None

    def attach(self, directory: Directory) -> None:
        """Eject endpoints whose breaker is open from ``directory`` (the caller's local view)."""
        self._directory = directory

    async def __call__(self, attempt: Attempt, call_next: Handler[Attempt]) -> msgspec.Raw:
        request = attempt.request
        policy = (request.policy or self._policies(request.service, request.method)).breaker
        if policy.state == "disabled":
            return await call_next(attempt)  # type: ignore[no-any-return]
        guard = self._guards.get(_key(attempt, policy)) or self._guard(attempt, policy)
        guard.mode = policy.state
        time_left = None
        deadline = attempt.deadline
        if guard.breaker.state != "closed" and deadline is not None:
            time_left = deadline - time.monotonic()  # a probe's bound: read only when it may probe
        permit = guard.breaker.admit(policy, time_left)
        if permit is None:
            raise self._refusal(guard, policy)
        try:
            payload: msgspec.Raw = await call_next(attempt)
        except BaseException as exc:  # re-raised: only counted here
            guard.breaker.record(permit, policy, outcome_of(exc))
            raise
        guard.breaker.record(permit, policy, "success")
        return payload

    def _guard(self, attempt: Attempt, policy: BreakerPolicy) -> _Guard:
        key = _key(attempt, policy)
        self._forget_gone(key[0])
        guard = _Guard(key, attempt.endpoint)
        guard.breaker = Breaker(
            self._clock,
            random_source=self._random,
            on_transition=lambda change: self._on_transition(guard, change),
        )
        self._guards[key] = guard
        return guard

    def _forget_gone(self, service: str) -> None:
        # A new breaker is rare (a new endpoint): the time to drop those of
        # endpoints that have left the registry, so churn does not pile them up.
        endpoint_set = self._directory.get(service) if self._directory else None
        if endpoint_set is None:
            return
        for key in [k for k in self._guards if k[0] == service]:
            if key[1] not in endpoint_set.endpoints:
                del self._guards[key]

    def _refusal(self, guard: _Guard, policy: BreakerPolicy) -> Unavailable:
        service, _, method = guard.key
        where = f"{service}{'.' + method if method else ''} at {guard.endpoint.address}"
        breaker = guard.breaker
        if policy.state == "forced_open":
            self._eject(guard, policy.open_base, FORCED_OPEN)
            message, refusal = f"breaker of {where} is forced open by its policy", FORCED_OPEN
        elif breaker.state == "open":
            left = breaker.open_until - self._clock.monotonic()
            message, refusal = f"breaker of {where} is open ({left:.1f}s more)", BREAKER_OPEN
        else:
            message = f"breaker of {where} is half-open and its probes are out"
            refusal = "breaker half-open"
        return Unavailable(message, never_sent=True, details={"refusal": refusal})

    def _on_transition(self, guard: _Guard, change: Transition) -> None:
        service, endpoint_id, method = guard.key
        kind = {
            "open": SignalKind.BREAKER_OPENED,
            "half_open": SignalKind.BREAKER_HALF_OPEN,
            "closed": SignalKind.BREAKER_CLOSED,
        }[change.new]
        detail: dict[str, object] = {
            "reason": change.reason,
            "calls": change.counts.calls,
            "failure_rate": change.counts.failure_rate,
            "trips": guard.breaker.trips,
        }
        if change.open_until is not None:
            detail["open_seconds"] = change.open_until - self._clock.monotonic()
        self._signals.emit(kind, service, endpoint=endpoint_id, method=method, detail=detail)
        if method is not None or guard.mode == "metrics_only":
            # A per-method breaker leaves the endpoint to its other methods; a
            # watching one leaves it alone.
            return
        if change.open_until is not None:
            self._eject(guard, change.open_until - self._clock.monotonic(), BREAKER_OPEN)
        elif change.new == "half_open":
            self._restore(guard)

    def _restore(self, guard: _Guard) -> None:
        # The ejection runs out with the open time (one duration, two clocks):
        # restoring here only matters when the clocks differ (a test's fake one).
        endpoint_set = self._directory.get(guard.key[0]) if self._directory else None
        if endpoint_set is not None:
            current = endpoint_set.ejected.get(guard.endpoint.id)
            if current is not None and current.reason in (BREAKER_OPEN, FORCED_OPEN):
                endpoint_set.restore(guard.endpoint)
        self._signals.emit(
            SignalKind.RESTORED,
            guard.key[0],
            endpoint=guard.endpoint.id,
            detail={"reason": "probing"},
        )

    def _eject(self, guard: _Guard, seconds: float, reason: str) -> None:
        endpoint_set = self._directory.get(guard.key[0]) if self._directory else None
        if endpoint_set is None or guard.key[2] is not None:
            return
        now = time.monotonic()
        current = endpoint_set.ejected.get(guard.endpoint.id)
        if current is not None and current.reason == reason and current.until > now:
            return  # already out for this reason: no second signal
        # The directory keeps real monotonic time; the breaker its clock's: carry the duration.
        endpoint_set.eject(guard.endpoint, now + seconds, reason)
        self._signals.emit(
            SignalKind.EJECTED,
            guard.key[0],
            endpoint=guard.endpoint.id,
            detail={"reason": reason, "seconds": seconds},
        )


def _key(attempt: Attempt, policy: BreakerPolicy) -> Key:
    request = attempt.request
    return (request.service, attempt.endpoint.id, request.method if policy.per_method else None)

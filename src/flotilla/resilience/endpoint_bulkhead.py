"""The caller's bulkhead: a cap on the calls one caller has in flight to one endpoint.

The callee's own bulkhead (:mod:`flotilla.resilience.bulkhead`) protects the
callee; this one protects the caller from piling its calls onto one replica
that stopped answering quickly, and spreads a burst over the others before the
callee has to shed it.  With ``per_endpoint`` set in the service's
:class:`~flotilla.resilience.policy.BulkheadPolicy`, an attempt beyond the cap
is refused before it leaves the process (``ResourceExhausted``,
``never_sent``): balancing sends it to another endpoint at once, at no retry
budget, and a caller whose every endpoint is full learns so at once.

It costs one comparison per attempt: balancing already counts each endpoint's
calls in flight (this attempt included) for its own choice.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from flotilla.errors import ResourceExhausted
from flotilla.pipeline import Handler
from flotilla.request import Attempt
from flotilla.resilience.policy import PolicyLookup, uniform
from flotilla.resilience.signals import SignalKind, Signals

__all__ = ["EndpointBulkhead"]


class EndpointBulkhead:
    """The client stack's ``bulkhead`` layer (see the module docstring).

    A request's own policy, when it has one, takes precedence over ``policies``.
    """

    def __init__(
        self, policies: PolicyLookup | None = None, signals: Signals | None = None
    ) -> None:
        self._policies = policies or uniform()
        self._signals = signals or Signals()

    def __call__(self, attempt: Attempt, call_next: Handler[Attempt]) -> Awaitable[Any]:
        request = attempt.request
        policy = request.policy or self._policies(request.service, request.method)
        cap = policy.bulkhead.per_endpoint
        endpoint = attempt.endpoint
        if cap is not None and endpoint.inflight > cap:  # inflight counts this attempt
            self._signals.emit(
                SignalKind.SHED,
                request.service,
                endpoint=endpoint.id,
                method=request.method,
                detail={"side": "caller", "per_endpoint": cap},
            )
            raise ResourceExhausted(
                f"{cap} calls of this caller already in flight to {endpoint.address} "
                f"(bulkhead per_endpoint {cap})",
                details={"per_endpoint": cap, "refusal": f"bulkhead per_endpoint {cap}"},
                never_sent=True,
            )
        return call_next(attempt)

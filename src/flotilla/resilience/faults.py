"""Fault injection: make a replica slow, failing or crashing on purpose (Envoy's and Dapr's idea).

Resilience that is never exercised does not work when it is needed.  The
``faults`` layer of the server stack stands in for the method and, for the
fraction of calls its :class:`~flotilla.resilience.policy.FaultPolicy` says,
injects::

    delay   wait ``delay`` seconds, then go on (the call holds its bulkhead slot,
            and the deadline sweep ends it as it would a slow method)
    abort   cut the call's connection, as a crash would: the caller sees the
            connection lost (so do its other calls on that connection)
    error   answer the policy's ``error`` code instead of running the method

Each is drawn on its own, in that order (a call may be delayed, then fail); a
fraction of 0 draws nothing and 1 always applies.  Faults come from the
configured policy, or are set at run time with :meth:`Faults.set` (a test's
``cluster.inject(...)``), which takes precedence.  ``random`` makes the draws
reproducible; every injected fault is signalled as ``fault.injected``.
"""

from __future__ import annotations

import random as random_module
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConnectionCut, error_for_code
from flotilla.pipeline import Handler
from flotilla.resilience.policy import FaultPolicy, PolicyLookup, uniform
from flotilla.resilience.signals import SignalKind, Signals

if TYPE_CHECKING:  # the runtime stands above resilience: its types only
    from flotilla.runtime.dispatcher import Incoming

__all__ = ["Faults"]


class Faults:
    """The server stack's ``faults`` layer, and the switch to set faults at run time.

    ::

        node.faults.set("catalog", "get", FaultPolicy(error="internal", error_fraction=0.3))
        node.faults.set("catalog", None, FaultPolicy(delay=0.5, delay_fraction=1.0))
        node.faults.clear()
    """

    def __init__(
        self,
        policies: PolicyLookup | None = None,
        signals: Signals | None = None,
        *,
        clock: Clock | None = None,
        random: random_module.Random | None = None,
    ) -> None:
        self._policies = policies or uniform()
        self._signals = signals or Signals()
        self._clock = clock or SystemClock()
        self._random = random or random_module.Random()
        self._set: dict[str, FaultPolicy] = {}  # "service" or "service.method" -> faults

    def set(self, service: str, method: str | None, policy: FaultPolicy) -> None:
        """Inject ``policy``'s faults into calls of ``service.method`` (None: every method)."""
        self._set[service if method is None else f"{service}.{method}"] = policy

    def clear(self, service: str | None = None, method: str | None = None) -> None:
        """Stop faults set at run time: all of them, a service's, or one method's."""
        if service is None:
            self._set.clear()
        else:
            self._set.pop(service if method is None else f"{service}.{method}", None)

    def policy(self, service: str, method: str) -> FaultPolicy:
        """The faults in force for ``service.method``: set at run time, else configured."""
        if self._set:
            chosen = self._set.get(f"{service}.{method}") or self._set.get(service)
            if chosen is not None:
                return chosen
        return self._policies(service, method).faults

    def __call__(self, incoming: Incoming, call_next: Handler[Incoming]) -> Awaitable[Any]:
        route = incoming.route
        if route is None:
            return call_next(incoming)
        if self._set:
            policy = self.policy(route.service, route.spec.name)
        else:
            policy = self._policies(route.service, route.spec.name).faults
        # Tested inline (not policy.injects): this runs on every call.
        if policy.delay_fraction or policy.error_fraction or policy.abort_fraction:
            return self._inject(policy, incoming, call_next)
        return call_next(incoming)  # no coroutine of ours on the usual path

    async def _inject(
        self, policy: FaultPolicy, incoming: Incoming, call_next: Handler[Incoming]
    ) -> Any:
        if self._draw(policy.delay_fraction):
            self._signal(incoming, "delay", seconds=policy.delay)
            await self._clock.sleep(policy.delay)
        if self._draw(policy.abort_fraction):
            self._signal(incoming, "abort")
            raise ConnectionCut(f"fault injected: connection of {incoming.target} cut")
        if self._draw(policy.error_fraction):
            self._signal(incoming, "error", code=policy.error)
            raise error_for_code(policy.error, f"fault injected into {incoming.target}")
        return await call_next(incoming)

    def _draw(self, fraction: float) -> bool:
        return fraction >= 1.0 or (fraction > 0.0 and self._random.random() < fraction)

    def _signal(self, incoming: Incoming, fault: str, **detail: Any) -> None:
        service, _, method = incoming.target.partition(".")
        self._signals.emit(
            SignalKind.FAULT, service, method=method, detail={"fault": fault, **detail}
        )

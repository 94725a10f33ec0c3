"""The retry layer: try a failed call again, when it is safe, useful and within budget;
and hedge a slow one, when its policy says so.

It stands in the request tier of the client pipeline (``retry`` in
:data:`~flotilla.pipeline.CLIENT_STACK`), above balancing, so each new
attempt is balanced afresh and prefers an endpoint the earlier ones did not
use (``request.tried``, which balancing fills).  Each of its attempts of a
hedged method is a race of a first attempt and its hedges
(:mod:`flotilla.resilience.hedge`).  For each failure it asks, in order::

    a failure of a transient kind?     unavailable, internal, aborted
        (never an answer: not_found, invalid_argument, deadline_exceeded... go straight back;
        nor resource_exhausted: a callee shedding load is overloaded, and a retry adds load
        where it hurts most; balancing already steers the next calls away from it)
    safe to send again?                the method is idempotent, or the error is retryable
    not retried downstream already?    error.retried is False (see below)
    attempts left?                     fewer than RetryPolicy.max_attempts so far
    time left?                         now + backoff < the request's deadline
    budget left?                       the caller's RetryBudget for the service allows one
        yes to all -> wait the backoff (full jitter), send again;  any no -> raise this error

No storms down a chain.  When this layer gives up on a failure it could have
retried (attempts, deadline or budget spent), it marks the error ``retried``.
A handler that lets that error escape, or fails while handling it, sends the
mark back in its ``Failure`` frame (the dispatcher sees to the second case),
and the retry layer of *its* caller does not retry it: the hop nearest
the fault retries, the hops above do not multiply it (three services retrying
three times each would otherwise make 27 calls to the last one).

It arms no timer of its own for the deadline: the transport's sweeps enforce
it; this layer only refuses a backoff that would outlast it.  A failure that
never left the process is requeued by balancing at no cost, before this layer
sees anything.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Any

from flotilla.clock import Clock, SystemClock
from flotilla.errors import Aborted, FlotillaError, Internal, Unavailable
from flotilla.pipeline import Handler
from flotilla.request import Request
from flotilla.resilience.backoff import backoff_delay
from flotilla.resilience.budget import RetryBudget, RetryBudgets
from flotilla.resilience.hedge import Hedger
from flotilla.resilience.latency import LatencyTracker
from flotilla.resilience.policy import Policy, PolicyLookup
from flotilla.resilience.signals import SignalKind, Signals

__all__ = ["TRANSIENT", "Retry", "retriable"]

TRANSIENT: tuple[type[FlotillaError], ...] = (Unavailable, Internal, Aborted)
"""Failures that another attempt (elsewhere, or a little later) may not meet.  Every
other code is an answer about the request itself, the same on any replica, or (for
``deadline_exceeded``) a deadline that a new attempt would share."""


def retriable(request: Request, error: FlotillaError) -> bool:
    """Whether ``error`` is a failure that another attempt of ``request`` may cure, safely."""
    return (
        isinstance(error, TRANSIENT)
        and (request.idempotent or error.retryable)
        and not error.retried
    )


class Retry:
    """The ``retry`` middleware (see the module docstring).

    ``policies`` answers the :class:`~flotilla.resilience.policy.Policy` of each
    method (a request's own ``policy`` wins); ``signals`` gets ``retry``,
    ``hedge`` and ``retry.budget_exhausted``; ``clock`` is what backoffs and
    hedge delays wait on and budgets count by (its ``monotonic`` must be the
    clock of the requests' deadlines: the real one, except in a test that sets
    deadlines on a fake); ``random`` draws the jitter; ``latency`` keeps each
    method's latency for hedge delays.
    """

    def __init__(
        self,
        policies: PolicyLookup,
        signals: Signals,
        *,
        clock: Clock | None = None,
        random: Callable[[], float] | None = None,
        latency: LatencyTracker | None = None,
    ) -> None:
        self.policies = policies
        self.signals = signals
        self.clock = clock or SystemClock()
        self.random = random or _random.Random().random
        self.budgets = RetryBudgets(self.clock, signals)
        self.hedger = Hedger(signals, self.budgets, clock=self.clock, latency=latency)

    async def __call__(self, request: Request, call_next: Handler[Request]) -> Any:
        policy = request.policy or self.policies(request.service, request.method)
        budget = self.budgets.get(request.service, policy.budget)
        budget.deposit()
        hedged = policy.hedge.enabled and request.idempotent
        attempts = 1
        while True:
            try:
                if hedged:
                    return await self.hedger.race(request, call_next, policy.hedge, budget)
                return await call_next(request)
            except FlotillaError as exc:
                delay = self._again(request, exc, attempts, policy, budget)
                if delay is None:
                    raise
            attempts += 1
            await self.clock.sleep(delay)

    def _again(
        self,
        request: Request,
        error: FlotillaError,
        attempts: int,
        policy: Policy,
        budget: RetryBudget,
    ) -> float | None:
        """The backoff before the next attempt, or None to give up with ``error``."""
        if not retriable(request, error):
            return None
        retry = policy.retry
        delay = backoff_delay(retry, attempts - 1, self.random)
        deadline = request.deadline
        if (
            attempts >= retry.max_attempts
            or (deadline is not None and self.clock.monotonic() + delay >= deadline)
            or not self.budgets.withdraw(request.service, budget, request.method, "retry")
        ):
            if retry.max_attempts > 1:
                error.retried = True  # this hop could retry it: none above should
            return None
        detail = {"attempt": attempts + 1, "error": error.code, "delay": delay}
        self.signals.emit(SignalKind.RETRY, request.service, method=request.method, detail=detail)
        return delay

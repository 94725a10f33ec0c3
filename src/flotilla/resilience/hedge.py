"""Hedged requests: when the first attempt is slow, send a second elsewhere; first answer wins.

A hedged request (Dean and Barroso, "The Tail at Scale") trades a little extra
load for a shorter tail: most calls answer before the hedge delay and cost
nothing more; the few stuck behind a slow replica get a second chance on
another one.  Only idempotent methods are hedged (two attempts may both run),
and only when their :class:`~flotilla.resilience.policy.HedgePolicy` is
enabled (per method in the configuration, or per call in ``request.policy``)::

    first attempt ----------------------------X (cancelled: the hedge won)
                  |<- delay ->| hedge ---> answer -> returned
                                (another endpoint: request.tried)

The delay is the policy's ``delay``, or else the method's observed
``percentile`` latency (:mod:`flotilla.resilience.latency`; with too few
samples yet, no hedge).  Each hedge spends one retry of the caller's budget
(:class:`~flotilla.resilience.budget.RetryBudgets`, shared with the retry
layer), and a hedge that would start past the deadline is not sent.  The
first *answer* wins and the rest are cancelled (the transport's sweep forgets a
cancelled call and tells its callee, which stops working for nobody); a failed
attempt does not end the call while another is still running.  When all fail,
the first failure is raised, for the retry layer above to judge.

Hedging is part of the ``retry`` slot, not a layer of its own: the retry
layer (:mod:`flotilla.resilience.retry`) runs each of its attempts as a race
when the method is hedged.  So a retry re-runs the whole race (a hedge is
never retried on its own), hedges and retries spend one budget, every hedge is
balanced afresh (the slot stands above balancing), and a call that is not
hedged, nearly all of them, pays for no second layer: a layer of its own cost
~0.2 µs per call for one more policy lookup and call, measured in-process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from flotilla.clock import Clock, SystemClock
from flotilla.pipeline import Handler
from flotilla.request import Request
from flotilla.resilience.budget import RetryBudget, RetryBudgets
from flotilla.resilience.latency import DecayingHistogram, LatencyTracker
from flotilla.resilience.policy import HedgePolicy
from flotilla.resilience.signals import SignalKind, Signals

__all__ = ["Hedger"]


class Hedger:
    """Runs one attempt of a hedged call as a race (see the module docstring).

    ``budgets`` are the retry layer's: hedges spend what its requests earn.
    ``clock`` times the attempts and the hedge delay (the real one, except in
    tests); ``latency`` keeps each method's observed latency.
    """

    def __init__(
        self,
        signals: Signals,
        budgets: RetryBudgets,
        *,
        clock: Clock | None = None,
        latency: LatencyTracker | None = None,
    ) -> None:
        self.signals = signals
        self.budgets = budgets
        self.clock = clock or SystemClock()
        self.latency = latency or LatencyTracker(self.clock)

    async def race(
        self,
        request: Request,
        call_next: Handler[Request],
        hedge: HedgePolicy,
        budget: RetryBudget,
    ) -> Any:
        """The first answer of the attempts; the first failure if all of them fail."""
        if request.tried is None:
            request.tried = set()  # so that balancing steers the hedge off the first endpoint
        histogram = self.latency[request.target]
        hedges_left = hedge.max_hedges
        async with asyncio.TaskGroup() as group:
            race = _Race(group, lambda: self._timed(request, call_next, histogram))
            while race.running:
                delay = self._delay(request, hedge, histogram) if hedges_left else None
                timer = None if delay is None else self.clock.sleep(delay)
                timed_out = await race.wait(timer)
                if race.won:
                    return race.result  # the TaskGroup awaits the cancelled losers
                if timed_out and race.running:
                    hedges_left -= 1
                    if self._spend(request, budget, hedge, hedges_left):
                        race.start()
                    else:
                        hedges_left = 0
        raise race.failure()

    async def _timed(
        self, request: Request, call_next: Handler[Request], histogram: DecayingHistogram
    ) -> tuple[bool, Any]:
        """One attempt: ``(True, result)``, or ``(False, error)`` so that the TaskGroup
        never sees a failure (which would cancel the other attempts)."""
        started = self.clock.monotonic()
        try:
            result = await call_next(request)
        except Exception as exc:
            return False, exc
        histogram.record(self.clock.monotonic() - started)  # answers only: a fast
        return True, result  # failure must not make the method look fast

    def _delay(
        self, request: Request, hedge: HedgePolicy, histogram: DecayingHistogram
    ) -> float | None:
        """Seconds to wait for the attempts before hedging; None: no hedge for this call."""
        delay = hedge.delay if hedge.delay is not None else histogram.percentile(hedge.percentile)
        deadline = request.deadline
        if delay is None or (deadline is not None and self.clock.monotonic() + delay >= deadline):
            return None
        return delay

    def _spend(
        self, request: Request, budget: RetryBudget, hedge: HedgePolicy, hedges_left: int
    ) -> bool:
        if not self.budgets.withdraw(request.service, budget, request.method, "hedge"):
            return False
        number = hedge.max_hedges - hedges_left
        self.signals.emit(
            SignalKind.HEDGE, request.service, method=request.method, detail={"hedge": number}
        )
        return True


Outcome = tuple[bool, Any]
"""``(True, result)`` or ``(False, error)``: how an attempt of a race ends."""


class _Race:
    """The attempts of one hedged call, in its TaskGroup: the first answer wins.

    Attempts never raise into the group (they return an :data:`Outcome`): a
    failure must not cancel the others, which may still answer.
    """

    def __init__(
        self, group: asyncio.TaskGroup, attempt: Callable[[], Coroutine[Any, Any, Outcome]]
    ) -> None:
        self._group = group
        self._attempt = attempt
        self.running: set[asyncio.Task[Outcome]] = set()
        self.won = False
        self.result: Any = None
        self._errors: list[BaseException] = []
        self.start()

    def start(self) -> None:
        """Send one more attempt."""
        self.running.add(self._group.create_task(self._attempt()))

    async def wait(self, timer: Coroutine[Any, Any, None] | None) -> bool:
        """Wait until an attempt ends or ``timer`` does; True if the timer ended first."""
        timer_task = None if timer is None else self._group.create_task(timer)
        waiting: set[asyncio.Future[Any]] = set(self.running)
        if timer_task is not None:
            waiting.add(timer_task)
        done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if timer_task is not None:
            timer_task.cancel()
        for task in [task for task in self.running if task in done]:
            self.running.discard(task)
            answered, outcome = task.result()
            if answered and not self.won:
                self.won, self.result = True, outcome
            elif not answered:
                self._errors.append(outcome)
        if self.won:
            for loser in self.running:
                loser.cancel()
        return timer_task is not None and timer_task in done and not self.won

    def failure(self) -> BaseException:
        """The first failure, once every attempt failed."""
        return self._errors[0]

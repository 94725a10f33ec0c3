"""The retry budget: how many retries and hedges a caller may add to its requests.

Retries save a call when a few replicas fail; when most of them fail, retries
only multiply the load on a service that is already down.  A budget bounds
them the way Finagle's ``RetryBudget`` and Linkerd do: over the last
``window`` seconds, the retries (and hedges) may number at most::

    ratio * requests  +  min_per_second * window

so with the defaults (20 %, 10/s, 10 s) a busy caller adds at most a fifth to
its load, and a quiet one may still retry a hundred times in ten seconds.

Accounting.  Time is cut into :data:`SLOTS` slots of ``window / SLOTS``
seconds, counted from 0 on the clock; each slot counts the requests and the
retries that began in it.  The window is the current slot and the
``SLOTS - 1`` before it: an event is forgotten when the clock enters the
``SLOTS``-th slot after its own, i.e. after between ``window * (1 - 1/SLOTS)``
and ``window`` seconds.  Only first attempts are *requests*; a retry or a
hedge is a *withdrawal*, allowed when one more withdrawal stays within the
bound above.  Counting is O(1) per call (a clock read, a compare, two adds).

A budget is per caller and per target service (:class:`RetryBudgets`): retries
to one failing service never spend what another service's calls earned.
"""

from __future__ import annotations

import time

from flotilla.clock import Clock, SystemClock
from flotilla.resilience.policy import BudgetPolicy
from flotilla.resilience.signals import SignalKind, Signals

__all__ = ["SIGNAL_INTERVAL", "SLOTS", "RetryBudget", "RetryBudgets"]

SLOTS = 10
"""Slots per window: finer forgets more smoothly and costs a longer ring to clear."""
SIGNAL_INTERVAL = 1.0
"""Seconds between two ``retry.budget_exhausted`` signals of one budget: an
exhausted budget refuses every retry, and one signal per refusal would flood."""
# Float slack: ratio * requests is inexact (0.2 * 3 = 0.6000000000000001).
_EPSILON = 1e-9


class RetryBudget:
    """The retries one caller may still make to one service (see the module docstring)."""

    __slots__ = (
        "_index",
        "_last_signal",
        "_now",
        "_refused",
        "_requests",
        "_retries",
        "_slot",
        "_slot_end",
        "_total_requests",
        "_total_retries",
        "_width",
        "policy",
    )

    def __init__(self, policy: BudgetPolicy, clock: Clock) -> None:
        self.policy = policy
        # Read on every call: the real clock's function itself, not a method around it.
        self._now = time.monotonic if isinstance(clock, SystemClock) else clock.monotonic
        self._width = policy.window / SLOTS
        self._requests = [0] * SLOTS
        self._retries = [0] * SLOTS
        self._slot = 0
        self._index = 0
        self._slot_end = 0.0
        self._total_requests = 0
        self._total_retries = 0
        self._refused = 0
        self._last_signal: float | None = None
        self._enter(self._now())

    @property
    def requests(self) -> int:
        """First attempts counted in the window now."""
        self._advance()
        return self._total_requests

    @property
    def retries(self) -> int:
        """Retries and hedges counted in the window now."""
        self._advance()
        return self._total_retries

    def deposit(self) -> None:
        """Count one request (a first attempt)."""
        if self._now() >= self._slot_end:
            self._advance()
        self._requests[self._index] += 1
        self._total_requests += 1

    def available(self) -> float:
        """Retries the budget still allows now (may be fractional; below 1 allows none)."""
        self._advance()
        policy = self.policy
        allowed = policy.ratio * self._total_requests + policy.min_per_second * policy.window
        return allowed - self._total_retries

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget allows it; False (nothing spent) if not."""
        if self.available() < 1 - _EPSILON:
            self._refused += 1
            return False
        self._retries[self._index] += 1
        self._total_retries += 1
        return True

    def refusals_to_report(self) -> int:
        """Refusals since the last report, if a signal is due now (else 0, and they wait)."""
        now = self._now()
        if self._refused == 0:
            return 0
        if self._last_signal is not None and now - self._last_signal < SIGNAL_INTERVAL:
            return 0
        refused, self._refused, self._last_signal = self._refused, 0, now
        return refused

    def _advance(self) -> None:
        now = self._now()
        if now < self._slot_end:
            return
        first, last = self._slot + 1, self._enter(now)
        # Clear the slots entered since the last call; a long pause clears them all.
        for passed in range(max(first, last - SLOTS + 1), last + 1):
            index = passed % SLOTS
            self._total_requests -= self._requests[index]
            self._total_retries -= self._retries[index]
            self._requests[index] = self._retries[index] = 0

    def _enter(self, now: float) -> int:
        """Make the slot ``now`` falls in the current one; returns its number."""
        slot = int(now // self._width)
        if (slot + 1) * self._width <= now:
            slot += 1  # floor and product disagree by a rounding: trust the product
        self._slot, self._index = slot, slot % SLOTS
        self._slot_end = (slot + 1) * self._width
        return slot


class RetryBudgets:
    """One :class:`RetryBudget` per target service, shared by the retry and hedge layers.

    A service whose budget policy changes gets a fresh budget (the counts of
    the old window meant something else).
    """

    def __init__(self, clock: Clock, signals: Signals) -> None:
        self._clock = clock
        self._signals = signals
        self._budgets: dict[str, RetryBudget] = {}

    def get(self, service: str, policy: BudgetPolicy) -> RetryBudget:
        budget = self._budgets.get(service)
        if budget is None or (budget.policy is not policy and budget.policy != policy):
            budget = self._budgets[service] = RetryBudget(policy, self._clock)
        return budget

    def withdraw(self, service: str, budget: RetryBudget, method: str, why: str) -> bool:
        """Spend one retry of ``budget`` (for ``why``: ``retry`` or ``hedge``); a refusal is
        signalled as ``retry.budget_exhausted``, at most once per :data:`SIGNAL_INTERVAL`."""
        if budget.try_withdraw():
            return True
        refused = budget.refusals_to_report()
        if refused:
            detail = {
                "refused": refused,
                "for": why,
                "requests": budget.requests,
                "retries": budget.retries,
            }
            self._signals.emit(SignalKind.BUDGET_EXHAUSTED, service, method=method, detail=detail)
        return False

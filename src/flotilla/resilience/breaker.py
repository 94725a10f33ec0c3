"""One circuit breaker: the state machine that stops calls to an endpoint that keeps failing.

::

          failure or slow-call rate >= threshold (with at
          least min_calls in the window), or N failures in a row
    CLOSED ───────────────────────────────────────► OPEN ◄──────────────┐
      ▲                                               │                  │ a probe failed,
      │                                               │ open time over   │ or never ended
      │ every probe succeeded                         ▼ (seen lazily)    │
      └───────────────────────────────────────── HALF_OPEN ─────────────┘
        (window reset, trips in a row back to 0)  admits half_open_probes

The rates are the failure rate and the slow-call rate of a
:class:`~flotilla.resilience.window.SlidingWindow` over ``policy.window``
seconds.  The *n*-th trip in a row keeps the breaker open for
``min(open_base * 2**(n-1), open_max)`` seconds, spread by ``+-jitter`` of
itself (so breakers that tripped together do not probe together).

The rates alone react slowly on an endpoint that was healthy a moment ago:
its window is full of successes, so half a window of failures must pass
before the failure rate reaches 50 %.  ``consecutive_failures`` in a row
(Envoy's ``consecutive_5xx``, Finagle's failure accrual) trips it at once.

``BreakerPolicy.state`` overrides the machine: ``forced_open`` refuses every
call, ``disabled`` admits every call and records nothing, ``metrics_only``
runs the machine (rates, transitions, signals) but admits every call.

What counts (:func:`outcome_of`): a failure is a fault of the endpoint
(unavailable, internal, deadline exceeded); an answer of the application (not
found, invalid argument, failed precondition...) is a success, since the
endpoint did its work.  A call the callee shed (resource exhausted) counts as
nothing: the endpoint is overloaded, not broken, and its bulkhead already
answers for it; opening breakers on shed calls would turn an overload into an
outage.  Nor does a call that never left the process (no connection: the
pool ejects the address; a full local bulkhead), or that was cancelled.

A probe that never ends must not keep the breaker half-open for ever: a
probe outstanding past its bound (its call's time left when admitted, else
``open_base``; at most ``open_max``) counts as failed.  This is checked
lazily, when the next call asks to be admitted: no timer per call.

Time comes from a :class:`~flotilla.clock.Clock`, randomness from an injected
function, and the policy is passed in on every call (it is data the breaker
never keeps), so a test drives every transition with exact numbers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal, NamedTuple

from flotilla.clock import Clock
from flotilla.errors import (
    DeadlineExceeded,
    FlotillaError,
    Internal,
    ResourceExhausted,
    Unavailable,
)
from flotilla.resilience.backoff import capped_exponential
from flotilla.resilience.policy import BreakerPolicy
from flotilla.resilience.window import Counts, SlidingWindow

__all__ = ["Breaker", "Outcome", "Permit", "State", "Transition", "outcome_of"]

State = Literal["closed", "open", "half_open"]
Outcome = Literal["success", "failure", "ignored"]

# Faults of the endpoint, as opposed to answers of the application it runs.
_ENDPOINT_FAULTS = (Unavailable, Internal, DeadlineExceeded)


def outcome_of(error: BaseException | None) -> Outcome:
    """How a call that ended with ``error`` (None: it answered) counts for its breaker."""
    if error is None:
        return "success"
    if not isinstance(error, FlotillaError):
        return "ignored"  # cancelled (a hedge's loser, a caller that gave up)
    if error.never_sent:
        # Refused here (a local bulkhead), or no connection: the endpoint was never
        # asked.  An unreachable endpoint is the pool's to eject (it marks the address
        # down with its own backoff, under the reason "unreachable"), not a breaker's.
        return "ignored"
    if isinstance(error, ResourceExhausted):
        return "ignored"  # shed: overloaded, not broken (see the module docstring)
    return "failure" if isinstance(error, _ENDPOINT_FAULTS) else "success"


class Permit(NamedTuple):
    """A call the breaker admitted; give it back to :meth:`Breaker.record` when it ends."""

    started: float
    round: int
    """The breaker's round when admitted: an outcome from an earlier round counts for nothing."""
    probe: int | None
    """The probe's number when admitted half-open, else None."""


class Transition(NamedTuple):
    """A change of state, as the breaker reports it to its listener."""

    old: State
    new: State
    open_until: float | None
    """When an opening ends (clock time), for a transition to open."""
    counts: Counts
    reason: str


class Breaker:
    """The breaker of one endpoint (or one endpoint's method); see the module docstring."""

    def __init__(
        self,
        clock: Clock,
        *,
        random_source: Callable[[], float] = random.random,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.clock = clock
        self._random = random_source
        self._on_transition = on_transition
        self.state: State = "closed"
        self.open_until = 0.0
        self.trips = 0
        """Trips in a row (back to 0 when the breaker closes)."""
        self._window: SlidingWindow | None = None
        self._round = 0
        # Half-open: probe number -> the time it counts as failed if still out.
        self._probes: dict[int, float] = {}
        self._probes_admitted = 0
        self._probes_passed = 0
        self._in_a_row = 0  # failures since the last success, while closed

    def counts(self, policy: BreakerPolicy) -> Counts:
        """The calls in the window now."""
        return self._window_for(policy).counts(self.clock.monotonic())

    def admit(self, policy: BreakerPolicy, time_left: float | None = None) -> Permit | None:
        """A permit for one call, or None if the breaker refuses it.

        ``time_left``: seconds the call may take (its deadline), the bound of a probe.
        """
        mode = policy.state
        if mode == "forced_open":
            return None
        now = self.clock.monotonic()
        if mode == "disabled":
            return Permit(now, -1, None)
        if self.state == "open" and now >= self.open_until:
            self._half_open(now)
        if self.state == "half_open":
            self._fail_stuck_probes(policy, now)
        if self.state == "closed":
            return Permit(now, self._round, None)
        if self.state == "half_open" and self._probes_admitted < policy.half_open_probes:
            return self._probe(policy, now, time_left)
        # Open, or half-open with every probe out: metrics_only still lets it through.
        return Permit(now, -1, None) if mode == "metrics_only" else None

    def record(self, permit: Permit, policy: BreakerPolicy, outcome: Outcome) -> None:
        """Count how the call of ``permit`` ended."""
        if permit.round != self._round or policy.state == "disabled":
            return  # admitted before the last transition, or nothing to record
        now = self.clock.monotonic()
        if permit.probe is not None:
            self._end_probe(permit.probe, policy, outcome, now)
            return
        if outcome == "ignored" or self.state != "closed":
            return
        limit = policy.slow_call_seconds
        slow = limit is not None and now - permit.started > limit
        window = self._window_for(policy)
        failed = outcome == "failure"
        calls, failures, slow_calls = window.record(now, failed=failed, slow=slow)
        self._in_a_row = self._in_a_row + 1 if failed else 0
        in_a_row = policy.consecutive_failures
        if in_a_row is not None and self._in_a_row >= in_a_row:
            self._open(policy, now, window.counts(now), f"{self._in_a_row} failures in a row")
            return
        # Even a quick success may trip it: the one that brings the window to min_calls.
        if calls < policy.min_calls:
            return
        if failures / calls >= policy.failure_rate:
            self._open(policy, now, window.counts(now), f"failure rate {failures / calls:.0%}")
        elif limit is not None and slow_calls / calls >= policy.slow_call_rate:
            self._open(policy, now, window.counts(now), f"slow-call rate {slow_calls / calls:.0%}")

    def open_time(self, policy: BreakerPolicy, trips: int) -> float:
        """Seconds the ``trips``-th trip in a row keeps the breaker open (jitter included)."""
        base = capped_exponential(policy.open_base, policy.open_max, trips - 1)
        return base * (1 + policy.jitter * (2 * self._random() - 1))

    def _probe(self, policy: BreakerPolicy, now: float, time_left: float | None) -> Permit:
        bound = min(time_left if time_left is not None else policy.open_base, policy.open_max)
        number = self._probes_admitted
        self._probes_admitted += 1
        self._probes[number] = now + bound
        return Permit(now, self._round, number)

    def _end_probe(self, number: int, policy: BreakerPolicy, outcome: Outcome, now: float) -> None:
        if self._probes.pop(number, None) is None:
            return  # already counted as stuck
        if outcome == "failure":
            self._open(policy, now, self._window_for(policy).counts(now), "a probe failed")
        elif outcome == "ignored":
            self._probes_admitted -= 1  # its slot goes to the next call
        else:
            self._probes_passed += 1
            if self._probes_passed >= policy.half_open_probes:
                self._close(policy, now)

    def _fail_stuck_probes(self, policy: BreakerPolicy, now: float) -> None:
        if any(now >= expires for expires in self._probes.values()):
            self._open(policy, now, self._window_for(policy).counts(now), "a probe never ended")

    def _open(self, policy: BreakerPolicy, now: float, counts: Counts, reason: str) -> None:
        self.trips += 1
        self.open_until = now + self.open_time(policy, self.trips)
        self._move("open", counts, reason)

    def _half_open(self, now: float) -> None:
        self._probes.clear()
        self._probes_admitted = self._probes_passed = 0
        self._move("half_open", Counts(), "open time over")

    def _close(self, policy: BreakerPolicy, now: float) -> None:
        self.trips = 0
        self._window_for(policy).reset()
        self._move("closed", Counts(), "every probe succeeded")

    def _move(self, new: State, counts: Counts, reason: str) -> None:
        old, self.state = self.state, new
        self._round += 1
        self._in_a_row = 0
        if self._on_transition is not None:
            until = self.open_until if new == "open" else None
            self._on_transition(Transition(old, new, until, counts, reason))

    def _window_for(self, policy: BreakerPolicy) -> SlidingWindow:
        window = self._window
        if window is None or window.seconds != policy.window:
            window = self._window = SlidingWindow(policy.window)  # a new policy: a new window
        return window

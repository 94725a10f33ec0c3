"""The callee's bulkhead: per method, a cap on the calls running at once and a bounded queue.

Overload must be refused cheaply and at once, not piled up until every call
times out.  Each hosted method (``service.method``) gets a compartment, as
:class:`~flotilla.resilience.policy.BulkheadPolicy` says::

    call ── running < limit, nobody waiting? ──yes──> run ──done──> hand the slot
      │                                                             to the oldest waiter
      no
      ▼
    queue full? ──yes──> ResourceExhausted at once (SHED signal; retryable: nothing ran)
      │
      no
      ▼
    wait in FIFO order ──slot handed over──> deadline passed? ──yes──> DeadlineExceeded
      │                                          │ no
      │ cancelled                                ▼
      ▼                                         run
    leave the queue (a slot handed over in that same instant is passed on)

A waiting call is cancelled by the transport's deadline sweep once its
deadline passes (no timer per call), and its caller told ``deadline_exceeded``;
it never ran.  With ``adaptive`` set the limit moves within
``[1, max_concurrent]`` by :mod:`flotilla.resilience.limits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random as random_module
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flotilla.clock import Clock, SystemClock
from flotilla.errors import DeadlineExceeded, ResourceExhausted
from flotilla.pipeline import Handler
from flotilla.resilience.limits import ConcurrencyLimit, adaptive_limit
from flotilla.resilience.policy import BulkheadPolicy, PolicyLookup, uniform
from flotilla.resilience.signals import SignalKind, Signals

if TYPE_CHECKING:  # the runtime stands above resilience: its types only
    from flotilla.runtime.dispatcher import Incoming

__all__ = ["Bulkhead", "Compartment"]


class Compartment:
    """One method's slots and queue: ``running`` calls of at most ``limit``, then ``waiters``."""

    __slots__ = ("adaptive", "limit", "policy", "running", "target", "waiters")

    def __init__(
        self, target: str, policy: BulkheadPolicy, random: random_module.Random | None = None
    ) -> None:
        self.target = target
        self.running = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.adaptive: ConcurrencyLimit | None = None
        self.policy = policy
        self.limit = policy.max_concurrent
        self.configure(policy, random)

    def configure(self, policy: BulkheadPolicy, random: random_module.Random | None = None) -> None:
        """Follow a changed policy (the calls running and waiting keep their places)."""
        previous = self.policy
        self.policy = policy
        if policy.adaptive is None:
            self.adaptive = None
            self.limit = policy.max_concurrent
        elif self.adaptive is None or (policy.adaptive, policy.max_concurrent) != (
            previous.adaptive,
            previous.max_concurrent,
        ):
            self.adaptive = adaptive_limit(policy.adaptive, policy.max_concurrent, random)
            self.limit = self.adaptive.limit
        self._admit()

    def release(self) -> None:
        """A call ended: its slot goes to the oldest waiter, if the limit allows."""
        self.running -= 1
        self._admit()

    def resize(self, limit: int) -> None:
        """The adaptive limit moved: admit waiters if it grew."""
        self.limit = limit
        self._admit()

    def _admit(self) -> None:
        waiters = self.waiters
        while waiters and self.running < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter leaves by itself
                self.running += 1
                waiter.set_result(None)

    async def wait_turn(self) -> None:
        """Wait in the queue until a slot is handed over (the caller then holds it)."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                # Take back only the place we took; _admit may have dropped it already.
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            else:
                self.release()  # handed a slot as we were cancelled: pass it on
            raise

    def describe(self) -> dict[str, Any]:
        """Its state, as a refusal names it and a ``load.shed`` signal carries it."""
        return {
            "running": self.running,
            "limit": self.limit,
            "queued": len(self.waiters),
            "max_queue": self.policy.max_queue,
        }


class Bulkhead:
    """The server stack's ``bulkhead`` layer (see the module docstring).

    ``policies`` answers each method's :class:`BulkheadPolicy` (asked per call,
    so a changed policy applies to the next call; default: the defaults); shed
    calls are signalled into ``signals`` as ``load.shed``.  ``clock`` times
    calls for an adaptive limit; ``random`` spreads its probes.
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
        self._now: Callable[[], float] = (clock or SystemClock()).monotonic
        self._random = random
        self.compartments: dict[str, Compartment] = {}

    async def __call__(self, incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        route = incoming.route
        if route is None:
            return await call_next(incoming)  # not served here: it fails at once, holds nothing
        policy = self._policies(route.service, route.spec.name).bulkhead
        compartment = self.compartments.get(route.target)
        if compartment is None:
            compartment = self.compartments[route.target] = Compartment(
                route.target, policy, self._random
            )
        elif policy is not compartment.policy:
            compartment.configure(policy, self._random)
        if compartment.running < compartment.limit and not compartment.waiters:
            compartment.running += 1  # the uncontended path: no allocation, no await
        else:
            await self._queue(compartment, incoming)
        if compartment.adaptive is not None:
            return await self._measured(compartment, incoming, call_next)
        try:
            return await call_next(incoming)
        finally:
            compartment.release()

    async def _queue(self, compartment: Compartment, incoming: Incoming) -> None:
        """Wait for a slot, or be refused at once when the queue is full."""
        if len(compartment.waiters) >= compartment.policy.max_queue:
            raise self._shed(compartment, incoming)
        await compartment.wait_turn()
        deadline = incoming.deadline
        if deadline is not None and deadline <= time.monotonic():
            compartment.release()
            raise DeadlineExceeded(f"{incoming.target} waited in its bulkhead past its deadline")

    def _shed(self, compartment: Compartment, incoming: Incoming) -> ResourceExhausted:
        state = compartment.describe()
        service, _, method = incoming.target.partition(".")
        self._signals.emit(SignalKind.SHED, service, method=method, detail=state)
        return ResourceExhausted(
            f"{incoming.target} is at its limit: {state['running']} running (limit "
            f"{state['limit']}) and {state['queued']} waiting (queue {state['max_queue']}); "
            "nothing ran, try again or elsewhere",
            details=state,
        )

    async def _measured(
        self, compartment: Compartment, incoming: Incoming, call_next: Handler[Incoming]
    ) -> Any:
        """Run the call and tell the adaptive limit how it went."""
        adaptive = compartment.adaptive
        assert adaptive is not None
        inflight = compartment.running
        started = self._now()
        try:
            result = await call_next(incoming)
        except DeadlineExceeded:
            compartment.resize(adaptive.drop())
            raise
        except asyncio.CancelledError:
            deadline = incoming.deadline
            if deadline is not None and deadline <= time.monotonic():
                compartment.resize(adaptive.drop())  # the deadline sweep cancelled it
            raise
        else:
            # Only answers feed the limit: the method's own failures say nothing of load.
            compartment.resize(adaptive.sample(self._now() - started, inflight))
            return result
        finally:
            compartment.release()

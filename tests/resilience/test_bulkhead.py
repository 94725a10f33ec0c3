"""The callee's bulkhead: a cap and a bounded FIFO queue per method; overload refused at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest

from flotilla import Service, codec, rpc
from flotilla.errors import DeadlineExceeded, NotFound, ResourceExhausted
from flotilla.headers import Headers
from flotilla.resilience.bulkhead import Bulkhead, Compartment
from flotilla.resilience.policy import BulkheadPolicy, Policy, PolicyLookup, RetryPolicy, uniform
from flotilla.resilience.signals import SignalKind, Signals
from flotilla.runtime.dispatcher import Dispatcher
from flotilla.testing import Cluster, FakeClock, wait_for


class Work(Service, name="work"):
    """Methods that run until the test opens the gate, and say who ran."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.gate = asyncio.Event()
        self.started: list[int] = []
        self.clock = clock

    @rpc
    async def hold(self, n: int) -> int:
        self.started.append(n)
        await self.gate.wait()
        return n

    @rpc
    async def quick(self) -> str:
        return "quick"

    @rpc
    async def timed(self, seconds: float, code: str = "") -> str:
        assert self.clock is not None
        await self.clock.sleep(seconds)
        if code == "deadline":
            raise DeadlineExceeded("an onward call ran out of time")
        if code == "not_found":
            raise NotFound("no such thing")
        return "done"


class NoInvoker:
    async def invoke(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no onward calls here")

    def client(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no onward calls here")


def limited(max_concurrent: int, max_queue: int, **options: Any) -> PolicyLookup:
    return uniform(
        Policy(
            bulkhead=BulkheadPolicy(max_concurrent=max_concurrent, max_queue=max_queue, **options)
        )
    )


class Setup:
    def __init__(self, policies: PolicyLookup, clock: FakeClock | None = None) -> None:
        self.work = Work(clock)
        self.signals = Signals()
        self.bulkhead = Bulkhead(policies, self.signals, clock=clock)
        self.dispatcher = Dispatcher([self.work], NoInvoker(), {"bulkhead": self.bulkhead})

    def call(self, method: str, deadline: float | None = None, **args: Any) -> Awaitable[bytes]:
        payload = msgspec.Raw(codec.encode(args))
        return self.dispatcher(f"work.{method}", payload, Headers(deadline=deadline))

    def start(self, n: int, **headers: Any) -> asyncio.Task[bytes]:
        return asyncio.ensure_future(self.call("hold", n=n, **headers))

    def compartment(self, method: str = "hold") -> Compartment:
        return self.bulkhead.compartments[f"work.{method}"]

    def queued(self) -> int:
        """Calls of ``hold`` waiting (0 before its first call)."""
        compartment = self.bulkhead.compartments.get("work.hold")
        return 0 if compartment is None else len(compartment.waiters)


async def test_an_uncontended_call_runs_and_gives_its_slot_back() -> None:
    setup = Setup(limited(2, 2))
    setup.work.gate.set()
    assert codec.decode(await setup.call("hold", n=1)) == 1
    compartment = setup.compartment()
    assert (compartment.running, len(compartment.waiters)) == (0, 0)


async def test_beyond_the_queue_a_call_is_refused_at_once_naming_the_method_and_limits() -> None:
    setup = Setup(limited(2, 2))
    tasks = [setup.start(n) for n in range(4)]
    await wait_for(lambda: setup.queued() == 2)
    assert setup.work.started == [0, 1]
    with pytest.raises(ResourceExhausted) as refused:
        await setup.call("hold", n=4)
    error = refused.value
    assert error.retryable
    assert "work.hold" in error.message
    assert "2 running (limit 2) and 2 waiting (queue 2)" in error.message
    assert error.details == {"running": 2, "limit": 2, "queued": 2, "max_queue": 2}
    (signal,) = setup.signals.recent
    assert (signal.kind, signal.service, signal.method) == (SignalKind.SHED, "work", "hold")
    assert signal.detail["queued"] == 2
    setup.work.gate.set()
    assert [codec.decode(await task) for task in tasks] == [0, 1, 2, 3]
    assert setup.work.started == [0, 1, 2, 3]  # queued calls ran in arrival order
    assert setup.compartment().running == 0


async def test_with_no_queue_a_full_method_refuses_at_once() -> None:
    setup = Setup(limited(1, 0))
    task = setup.start(0)
    await wait_for(lambda: setup.work.started == [0])
    with pytest.raises(ResourceExhausted, match="queue 0"):
        await setup.call("hold", n=1)
    setup.work.gate.set()
    await task


async def test_each_method_has_its_own_compartment() -> None:
    setup = Setup(limited(1, 0))
    task = setup.start(0)
    await wait_for(lambda: setup.work.started == [0])
    assert codec.decode(await setup.call("quick")) == "quick"  # not blocked by hold
    setup.work.gate.set()
    await task


async def test_the_policy_is_asked_per_method() -> None:
    tight = Policy(bulkhead=BulkheadPolicy(max_concurrent=1, max_queue=0))

    def policies(service: str, method: str | None = None) -> Policy:
        return tight if method == "hold" else Policy()

    setup = Setup(policies)
    task = setup.start(0)
    await wait_for(lambda: setup.work.started == [0])
    assert setup.compartment().limit == 1
    assert codec.decode(await setup.call("quick")) == "quick"
    assert setup.compartment("quick").limit == Policy().bulkhead.max_concurrent
    setup.work.gate.set()
    await task


async def test_a_changed_policy_applies_to_the_next_call_and_admits_waiters() -> None:
    policy = [Policy(bulkhead=BulkheadPolicy(max_concurrent=1, max_queue=5))]
    setup = Setup(lambda service, method=None: policy[0])
    tasks = [setup.start(n) for n in range(3)]
    await wait_for(lambda: setup.queued() == 2)
    policy[0] = Policy(bulkhead=BulkheadPolicy(max_concurrent=3, max_queue=5))
    tasks.append(setup.start(3))  # this call brings the new policy in: all four fit now but one
    await wait_for(lambda: setup.work.started == [0, 1, 2])
    assert len(setup.compartment().waiters) == 1
    setup.work.gate.set()
    await asyncio.gather(*tasks)


async def test_a_call_not_served_here_takes_no_compartment() -> None:
    setup = Setup(limited(1, 0))
    with pytest.raises(Exception, match="no method 'nope'"):
        await setup.call("nope")
    assert setup.bulkhead.compartments == {}


async def test_cancelled_while_queued_releases_nothing_it_did_not_take() -> None:
    setup = Setup(limited(1, 3))
    running = setup.start(0)
    queued = [setup.start(n) for n in (1, 2, 3)]
    await wait_for(lambda: setup.queued() == 3)
    compartment = setup.compartment()
    queued[0].cancel()  # the caller went away (a Cancel frame, the deadline sweep)
    with pytest.raises(asyncio.CancelledError):
        await queued[0]
    assert (compartment.running, len(compartment.waiters)) == (1, 2)  # the runner keeps its slot
    assert setup.work.started == [0]  # and no one took one for free
    setup.work.gate.set()
    assert [codec.decode(await task) for task in (running, *queued[1:])] == [0, 2, 3]
    assert setup.work.started == [0, 2, 3]
    assert (compartment.running, len(compartment.waiters)) == (0, 0)


async def test_cancelled_as_its_slot_was_handed_over_passes_the_slot_on() -> None:
    compartment = Compartment("work.hold", BulkheadPolicy(max_concurrent=1, max_queue=2))
    compartment.running = 1  # someone runs
    first = asyncio.ensure_future(compartment.wait_turn())
    second = asyncio.ensure_future(compartment.wait_turn())
    await wait_for(lambda: len(compartment.waiters) == 2)
    compartment.release()  # the slot goes to the first waiter...
    first.cancel()  # ...which is cancelled before it could resume
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot went on to the next in line
    assert (compartment.running, len(compartment.waiters)) == (1, 0)


async def test_a_queued_call_whose_deadline_passed_does_not_run() -> None:
    setup = Setup(limited(1, 1))
    running = setup.start(0)
    # Already past: the transport's sweep would have cancelled it while it waited;
    # handed a slot late, it still must not run.
    late = setup.start(1, deadline=time.monotonic() - 1)
    await wait_for(lambda: setup.queued() == 1)
    compartment = setup.compartment()
    setup.work.gate.set()
    await running
    with pytest.raises(DeadlineExceeded, match=r"work\.hold waited in its bulkhead"):
        await late
    assert setup.work.started == [0]
    assert compartment.running == 0


# -- adaptive limits, timed with the fake clock ------------------------------------------------


async def test_an_adaptive_limit_starts_below_the_cap_and_learns_from_each_answer() -> None:
    clock = FakeClock()
    setup = Setup(limited(50, 10, adaptive="gradient2"), clock)
    call = asyncio.ensure_future(setup.call("timed", seconds=0.25))
    await wait_for(lambda: "work.timed" in setup.bulkhead.compartments)
    compartment = setup.compartment("timed")
    assert compartment.limit == 20
    await clock.advance(0.25)
    await call
    adaptive: Any = compartment.adaptive
    assert adaptive.long_rtt == 0.25  # timed on the node's clock: exactly
    assert compartment.limit == 20  # one call of twenty says nothing of load


@pytest.mark.parametrize(("code", "limit"), [("deadline", 18), ("not_found", 20)])
async def test_a_timeout_backs_the_adaptive_limit_off_and_an_application_error_does_not(
    code: str, limit: int
) -> None:
    clock = FakeClock()
    setup = Setup(limited(50, 10, adaptive="gradient2"), clock)
    call = asyncio.ensure_future(setup.call("timed", seconds=0.1, code=code))
    await wait_for(lambda: "work.timed" in setup.bulkhead.compartments)
    await clock.advance(0.1)
    with pytest.raises((DeadlineExceeded, NotFound)):
        await call
    assert setup.compartment("timed").limit == limit
    assert setup.compartment("timed").running == 0


async def test_a_shrinking_limit_admits_no_one_until_the_running_fall_below_it() -> None:
    compartment = Compartment("work.hold", BulkheadPolicy(max_concurrent=4, max_queue=2))
    compartment.running = 3
    compartment.resize(2)
    waiter = asyncio.ensure_future(compartment.wait_turn())
    await wait_for(lambda: len(compartment.waiters) == 1)
    compartment.release()  # 2 running, limit 2: still full
    assert not waiter.done()
    compartment.release()
    await waiter
    assert compartment.running == 2


# -- through a real cluster --------------------------------------------------------------------


def cluster_policies(max_concurrent: int, max_queue: int) -> PolicyLookup:
    # No retries: this counts what the bulkhead does to each call, once.
    return uniform(
        Policy(
            bulkhead=BulkheadPolicy(max_concurrent=max_concurrent, max_queue=max_queue),
            retry=RetryPolicy(max_attempts=1),
        )
    )


async def test_overload_admits_the_limit_and_the_queue_and_refuses_the_rest_at_once() -> None:
    async with Cluster(policies=cluster_policies(2, 2)) as cluster:
        work = Work()
        (node,) = await cluster.add(work)
        calls = [asyncio.ensure_future(cluster.call("work.hold", n=n)) for n in range(10)]
        # The six refusals come back while the admitted four are still held.
        await wait_for(lambda: sum(call.done() for call in calls) == 6)
        refused = [call for call in calls if call.done()]
        assert all(isinstance(call.exception(), ResourceExhausted) for call in refused)
        assert len(work.started) == 2
        shed = [s for s in node.signals.recent if s.kind == SignalKind.SHED]
        assert len(shed) == 6
        work.gate.set()
        admitted = [call for call in calls if call not in refused]
        assert sorted([await call for call in admitted]) == sorted(work.started)
        assert len(work.started) == 4


async def test_a_call_queued_past_its_deadline_fails_and_never_runs() -> None:
    async with Cluster(policies=cluster_policies(1, 1)) as cluster:
        work = Work()
        await cluster.add(work)
        holder = asyncio.ensure_future(cluster.call("work.hold", n=0))
        await wait_for(lambda: work.started == [0])
        with pytest.raises(DeadlineExceeded):
            await cluster.context(timeout=0.1).call("work.hold", n=1)
        work.gate.set()
        assert await holder == 0
        assert work.started == [0]

"""Hedged requests (run by the retry layer), under the fake clock with scripted attempts: when a
hedge goes out, who wins, what is cancelled, what it costs; then a stalled replica in a Cluster."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from flotilla import NodeConfig, Service, Timings, rpc
from flotilla.errors import Internal, Unavailable
from flotilla.headers import Headers
from flotilla.request import Request
from flotilla.resilience.latency import DecayingHistogram
from flotilla.resilience.policy import BudgetPolicy, HedgePolicy, Policy, RetryPolicy, uniform
from flotilla.resilience.retry import Retry
from flotilla.resilience.signals import SignalKind, Signals
from flotilla.testing import Cluster, FakeClock, wait_for

PLENTY = BudgetPolicy(ratio=0.2, min_per_second=10.0)


class Attempts:
    """A next layer whose n-th attempt takes ``plan[n][0]`` seconds of the fake clock and then
    answers ``plan[n][1]`` (raised if an error); notes starts, ends and cancellations."""

    def __init__(self, clock: FakeClock, *plan: tuple[float, Any]) -> None:
        self.clock = clock
        self.plan = list(plan)
        self.started: list[float] = []
        self.cancelled: list[int] = []

    async def __call__(self, request: Request) -> Any:
        number = len(self.started)
        self.started.append(self.clock.monotonic())
        seconds, outcome = self.plan[number] if number < len(self.plan) else self.plan[-1]
        try:
            await self.clock.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.append(number)
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def hedge_layer(
    clock: FakeClock,
    signals: Signals | None = None,
    *,
    hedge: HedgePolicy | None = None,
    budget: BudgetPolicy = PLENTY,
) -> Retry:
    """The retry layer with retries off, so that what is seen is the hedging alone."""
    policy = Policy(
        retry=RetryPolicy(max_attempts=1),
        hedge=hedge or HedgePolicy(enabled=True, delay=0.1),
        budget=budget,
    )
    return Retry(uniform(policy), signals or Signals(), clock=clock)


def request(*, idempotent: bool = True, deadline: float | None = None) -> Request:
    headers = Headers(request_id="r", deadline=deadline)
    return Request("catalog", "get", {}, headers, idempotent=idempotent)


async def started(attempts: Attempts) -> None:
    """Let the first attempt start (the race's task runs at the loop's next turn) before the
    fake clock moves."""
    for _ in range(100):
        if attempts.started:
            return
        await asyncio.sleep(0)
    raise AssertionError("the first attempt never started")


async def run(hedge: Retry, attempts: Attempts, req: Request, clock: FakeClock) -> Any:
    task = asyncio.ensure_future(hedge(req, attempts))
    await started(attempts)
    while not task.done():
        await clock.advance(0.01)
    return task.result()


def hedges(signals: Signals) -> list[dict[str, Any]]:
    return [dict(s.detail) for s in signals.recent if s.kind == SignalKind.HEDGE]


async def test_a_slow_first_attempt_is_hedged_and_the_hedge_wins() -> None:
    clock = FakeClock()
    signals = Signals()
    layer = hedge_layer(clock, signals)
    attempts = Attempts(clock, (1.0, "slow"), (0.05, "fast"))
    start = clock.monotonic()
    result = await run(layer, attempts, request(), clock)
    assert result == "fast"
    assert [t - start for t in attempts.started] == pytest.approx([0.0, 0.1], abs=1e-9)
    assert attempts.cancelled == [0]  # the loser does not run on for nobody
    assert hedges(signals) == [{"hedge": 1}]
    assert layer.budgets.get("catalog", PLENTY).retries == 1  # a hedge spends retry budget


async def test_an_answer_before_the_delay_sends_no_hedge() -> None:
    clock = FakeClock()
    signals = Signals()
    layer = hedge_layer(clock, signals)
    attempts = Attempts(clock, (0.05, "ok"))
    result = await run(layer, attempts, request(), clock)
    assert result == "ok"
    assert len(attempts.started) == 1
    assert hedges(signals) == []
    assert layer.budgets.get("catalog", PLENTY).retries == 0


async def test_a_fast_failure_is_raised_at_once_for_the_retry_layer_to_judge() -> None:
    clock = FakeClock()
    error = Unavailable("down")
    attempts = Attempts(clock, (0.01, error))
    task = asyncio.ensure_future(hedge_layer(clock)(request(), attempts))
    await started(attempts)
    await clock.advance(0.01)
    with pytest.raises(Unavailable) as caught:
        await task
    assert caught.value is error
    assert len(attempts.started) == 1


async def test_a_failed_first_attempt_does_not_end_a_call_whose_hedge_still_runs() -> None:
    clock = FakeClock()
    attempts = Attempts(clock, (0.2, Internal("boom")), (0.3, "late but fine"))
    result = await run(hedge_layer(clock), attempts, request(), clock)
    assert result == "late but fine"
    assert attempts.cancelled == []


async def test_when_every_attempt_fails_the_first_failure_is_raised() -> None:
    clock = FakeClock()
    first, second = Unavailable("first"), Internal("second")
    attempts = Attempts(clock, (0.2, first), (0.3, second))
    with pytest.raises(Unavailable) as caught:
        await run(hedge_layer(clock), attempts, request(), clock)
    assert caught.value is first
    assert len(attempts.started) == 2


async def test_up_to_max_hedges_one_delay_apart() -> None:
    clock = FakeClock()
    signals = Signals()
    layer = hedge_layer(clock, signals, hedge=HedgePolicy(enabled=True, delay=0.1, max_hedges=2))
    attempts = Attempts(clock, (5.0, "a"), (5.0, "b"), (0.05, "c"))
    start = clock.monotonic()
    result = await run(layer, attempts, request(), clock)
    assert result == "c"
    assert [t - start for t in attempts.started] == pytest.approx([0.0, 0.1, 0.2], abs=1e-9)
    assert sorted(attempts.cancelled) == [0, 1]
    assert hedges(signals) == [{"hedge": 1}, {"hedge": 2}]


@pytest.mark.parametrize(
    ("policy", "idempotent"),
    [(HedgePolicy(enabled=False, delay=0.1), True), (HedgePolicy(enabled=True, delay=0.1), False)],
    ids=["disabled", "not-idempotent"],
)
async def test_no_hedge_unless_enabled_for_an_idempotent_method(
    policy: HedgePolicy, idempotent: bool
) -> None:
    clock = FakeClock()
    layer = hedge_layer(clock, hedge=policy)
    attempts = Attempts(clock, (1.0, "only"))
    result = await run(layer, attempts, request(idempotent=idempotent), clock)
    assert result == "only"
    assert len(attempts.started) == 1


async def test_the_calls_own_policy_turns_hedging_on() -> None:
    clock = FakeClock()
    layer = hedge_layer(clock, hedge=HedgePolicy(enabled=False))
    req = request()
    req.policy = Policy(hedge=HedgePolicy(enabled=True, delay=0.1))
    attempts = Attempts(clock, (1.0, "slow"), (0.05, "fast"))
    result = await run(layer, attempts, req, clock)
    assert result == "fast"


async def test_without_budget_no_hedge_and_the_refusal_is_signalled() -> None:
    clock = FakeClock()
    signals = Signals()
    layer = hedge_layer(clock, signals, budget=BudgetPolicy(ratio=0.0, min_per_second=0.0))
    attempts = Attempts(clock, (1.0, "slow but sure"))
    result = await run(layer, attempts, request(), clock)
    assert result == "slow but sure"
    assert len(attempts.started) == 1
    assert hedges(signals) == []
    (refused,) = [s for s in signals.recent if s.kind == SignalKind.BUDGET_EXHAUSTED]
    assert refused.detail["for"] == "hedge"


async def test_no_hedge_that_would_start_past_the_deadline() -> None:
    clock = FakeClock()
    attempts = Attempts(clock, (0.5, "ok"))
    req = request(deadline=clock.monotonic() + 0.1)  # the hedge would start at the deadline
    result = await run(hedge_layer(clock), attempts, req, clock)
    assert result == "ok"
    assert len(attempts.started) == 1


async def test_the_delay_is_the_observed_percentile_once_there_are_enough_samples() -> None:
    clock = FakeClock()
    layer = hedge_layer(clock, hedge=HedgePolicy(enabled=True, percentile=0.95))
    for _ in range(20):  # no estimate yet: no hedge, but the answers are measured
        attempts = Attempts(clock, (0.02, "ok"))
        await run(layer, attempts, request(), clock)
        assert len(attempts.started) == 1
    start = clock.monotonic()
    attempts = Attempts(clock, (1.0, "slow"), (0.02, "fast"))
    result = await run(layer, attempts, request(), clock)
    assert result == "fast"
    delay = attempts.started[1] - start
    assert delay == pytest.approx(DecayingHistogram.bound(0.02), abs=1e-9)


async def test_failures_are_not_measured_as_latency() -> None:
    clock = FakeClock()
    layer = hedge_layer(clock, hedge=HedgePolicy(enabled=True, percentile=0.95))
    for _ in range(30):
        with pytest.raises(Unavailable):
            await run(layer, Attempts(clock, (0.01, Unavailable("fast failure"))), request(), clock)
    assert layer.hedger.latency["catalog.get"].total == 0


async def test_cancelling_the_call_cancels_every_attempt() -> None:
    clock = FakeClock()
    attempts = Attempts(clock, (5.0, "a"), (5.0, "b"))
    task = asyncio.ensure_future(hedge_layer(clock)(request(), attempts))
    await started(attempts)
    await clock.advance(0.15)  # the hedge is out
    assert len(attempts.started) == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(attempts.cancelled) == [0, 1]


# -- through a Cluster: one replica of two stalls, the hedge wins ------------------------------


class Replica(Service, name="catalog"):
    """Answers its label at once, or (``stall``) only after a minute, noting cancellations."""

    def __init__(self, label: str, stall: bool) -> None:
        self.label = label
        self.stall = stall
        self.started = 0
        self.cancelled = 0

    @rpc(idempotent=True)
    async def get(self) -> str:
        self.started += 1
        if self.stall:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return self.label


async def test_a_stalled_replica_is_hedged_around_and_its_calls_are_cancelled() -> None:
    signals = Signals()
    policy = Policy(hedge=HedgePolicy(enabled=True, delay=0.05))

    def layers() -> dict[str, Any]:
        return {"retry": Retry(uniform(policy), signals)}

    replicas = iter([Replica("stalled", stall=True), Replica("fast", stall=False)])
    # Round robin: the stalled replica gets some of the first attempts, whatever P2C learns.
    config = NodeConfig(strategy="round_robin", timings=Timings(grace=0.0, drain=2.0))
    async with Cluster(config, layers=layers) as cluster:
        stalled_node, _ = await cluster.add(lambda: next(replicas), replicas=2)
        stalled = stalled_node.services[0]
        assert isinstance(stalled, Replica)
        started = time.monotonic()
        answers = [await cluster.call("catalog.get") for _ in range(6)]
        elapsed = time.monotonic() - started
        assert answers == ["fast"] * 6
        assert elapsed < 5.0  # unhedged, a call to the stalled one waits its 10 s deadline
        # Every call that went first to the stalled replica was hedged, and only those.
        assert stalled.started >= 1
        assert len(hedges(signals)) == stalled.started
        # The losers were cancelled at the callee too (the caller's sweep sent Cancel)...
        await wait_for(lambda: stalled.cancelled == stalled.started)
        # ... and the caller forgot them.
        connection = cluster.client_node.caller.pool.connected(stalled_node.address)
        assert connection is not None
        await wait_for(lambda: not connection.pending)

"""The retry layer, under the fake clock with a scripted next layer: when it retries, how long it
waits, what it gives up with, and what it tells the callers above; then a chain of three
services in a Cluster, to show that retries do not multiply down it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from flotilla import Context, NodeConfig, Service, Timings, rpc
from flotilla.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    FlotillaError,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)
from flotilla.headers import Headers
from flotilla.request import Request
from flotilla.resilience.policy import BreakerPolicy, BudgetPolicy, Policy, RetryPolicy, uniform
from flotilla.resilience.retry import Retry, retriable
from flotilla.resilience.signals import SignalKind, Signals
from flotilla.testing import Cluster, FakeClock

# Backoffs with the jitter drawn at 0.5: 0.0125, 0.025, 0.05 ... (base 0.025).
HALF = 0.5
PLENTY = BudgetPolicy(ratio=0.2, min_per_second=10.0)


class Script:
    """A next layer that plays ``outcomes`` in turn (an error is raised), noting when."""

    def __init__(self, clock: FakeClock, *outcomes: Any) -> None:
        self.clock = clock
        self.outcomes = list(outcomes)
        self.times: list[float] = []

    async def __call__(self, request: Request) -> Any:
        self.times.append(self.clock.monotonic())
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def layer(
    clock: FakeClock,
    signals: Signals | None = None,
    *,
    attempts: int = 3,
    budget: BudgetPolicy = PLENTY,
    random: Callable[[], float] = lambda: HALF,
) -> Retry:
    policy = Policy(retry=RetryPolicy(max_attempts=attempts), budget=budget)
    return Retry(uniform(policy), signals or Signals(), clock=clock, random=random)


def request(*, idempotent: bool = True, deadline: float | None = None) -> Request:
    return Request(
        "catalog", "get", {}, Headers(request_id="r", deadline=deadline), idempotent=idempotent
    )


async def run(retry: Retry, script: Script, req: Request, clock: FakeClock) -> Any:
    """Run one call to its end, moving the fake clock through its backoffs."""
    task = asyncio.ensure_future(retry(req, script))
    await asyncio.sleep(0)  # the first attempt goes out before the clock moves
    while not task.done():
        await clock.advance(0.001)
    return task.result()


async def test_an_answer_is_returned_at_once_and_counted_as_a_request() -> None:
    clock = FakeClock()
    retry = layer(clock)
    script = Script(clock, "ok")
    assert await run(retry, script, request(), clock) == "ok"
    assert len(script.times) == 1
    assert retry.budgets.get("catalog", PLENTY).requests == 1


async def test_retries_wait_the_jittered_backoff_then_answer() -> None:
    clock = FakeClock()
    signals = Signals()
    retry = layer(clock, signals)
    start = clock.monotonic()
    script = Script(clock, Unavailable("down"), Internal("boom"), "ok")
    assert await run(retry, script, request(), clock) == "ok"
    assert [t - start for t in script.times] == pytest.approx([0.0, 0.0125, 0.0375], abs=1e-9)
    retries = [s for s in signals.recent if s.kind == SignalKind.RETRY]
    assert [s.detail for s in retries] == [
        {"attempt": 2, "error": "unavailable", "delay": 0.0125},
        {"attempt": 3, "error": "internal", "delay": 0.025},
    ]
    assert retry.budgets.get("catalog", PLENTY).retries == 2


async def test_at_most_max_attempts_then_the_last_error_marked_retried() -> None:
    clock = FakeClock()
    last = Unavailable("still down")
    script = Script(clock, Unavailable("down"), Unavailable("down"), last)
    with pytest.raises(Unavailable) as caught:
        await run(layer(clock, attempts=3), script, request(), clock)
    assert caught.value is last
    assert caught.value.retried  # the callers above must not retry it again
    assert len(script.times) == 3


@pytest.mark.parametrize(
    "error",
    [
        NotFound("no product 7"),
        InvalidArgument("bad id"),
        FailedPrecondition("cart is closed"),
        Unimplemented("no such method"),
        DeadlineExceeded("too late"),
        NotFound("even if it says so", retryable=True),
    ],
    ids=["not-found", "invalid", "precondition", "unimplemented", "deadline", "not-found-flagged"],
)
async def test_an_answer_is_never_retried(error: FlotillaError) -> None:
    clock = FakeClock()
    script = Script(clock, error, "ok")
    with pytest.raises(type(error)):
        await run(layer(clock), script, request(), clock)
    assert len(script.times) == 1
    assert not error.retried  # nothing this hop could retry: nothing to tell


@pytest.mark.parametrize(
    ("error", "tries"),
    [
        (Unavailable("refused before any work"), 2),  # retryable by class
        (ResourceExhausted("full"), 1),  # shed load: not retried, whatever the method
        (Aborted("conflict"), 2),
        (Unavailable("connection lost", retryable=False), 1),  # it may have run
        (Internal("boom"), 1),
    ],
    ids=["unavailable", "exhausted", "aborted", "lost-after-sending", "internal"],
)
async def test_a_method_that_is_not_idempotent_is_retried_only_on_a_retryable_error(
    error: FlotillaError, tries: int
) -> None:
    clock = FakeClock()
    script = Script(clock, error, "ok")
    req = request(idempotent=False)
    if tries == 2:
        assert await run(layer(clock), script, req, clock) == "ok"
    else:
        with pytest.raises(type(error)):
            await run(layer(clock), script, req, clock)
        assert not error.retried
    assert len(script.times) == tries


async def test_a_failure_retried_downstream_is_not_retried_again() -> None:
    clock = FakeClock()
    downstream = Unavailable("the leaf is down", retried=True)
    script = Script(clock, downstream, "ok")
    with pytest.raises(Unavailable) as caught:
        await run(layer(clock), script, request(), clock)
    assert caught.value is downstream
    assert caught.value.retried  # and it climbs on
    assert len(script.times) == 1


async def test_no_backoff_past_the_deadline() -> None:
    clock = FakeClock()
    start = clock.monotonic()
    # The first retry waits 0.0125 (fits), the second 0.025 would end at 0.0375 > 0.03.
    script = Script(clock, Unavailable("down"))
    with pytest.raises(Unavailable) as caught:
        await run(layer(clock, attempts=5), script, request(deadline=start + 0.03), clock)
    assert len(script.times) == 2
    assert caught.value.retried


async def test_a_backoff_ending_exactly_at_the_deadline_is_not_waited() -> None:
    clock = FakeClock()
    script = Script(clock, Unavailable("down"))
    with pytest.raises(Unavailable):
        await run(layer(clock), script, request(deadline=clock.monotonic() + 0.0125), clock)
    assert len(script.times) == 1


async def test_no_retry_without_budget_and_the_refusal_is_signalled() -> None:
    clock = FakeClock()
    signals = Signals()
    # A reserve of exactly one retry in the window, no share of requests.
    retry = layer(clock, signals, budget=BudgetPolicy(ratio=0.0, min_per_second=0.1, window=10))
    first = Script(clock, Unavailable("down"), "ok")
    assert await run(retry, first, request(), clock) == "ok"
    second = Script(clock, Unavailable("down"), "ok")
    with pytest.raises(Unavailable) as caught:
        await run(retry, second, request(), clock)
    assert len(second.times) == 1
    assert caught.value.retried
    (refused,) = [s for s in signals.recent if s.kind == SignalKind.BUDGET_EXHAUSTED]
    assert refused.service == "catalog"
    assert refused.detail["for"] == "retry"


async def test_the_calls_own_policy_wins_and_one_attempt_marks_nothing() -> None:
    clock = FakeClock()
    req = request()
    req.policy = Policy(retry=RetryPolicy(max_attempts=1))
    error = Unavailable("down")
    script = Script(clock, error, "ok")
    with pytest.raises(Unavailable):
        await run(layer(clock, attempts=5), script, req, clock)
    assert len(script.times) == 1
    assert not error.retried  # retries were off here: a caller above may still retry


async def test_a_call_answered_at_once_makes_no_set_of_tried_endpoints() -> None:
    clock = FakeClock()
    req = request()
    await run(layer(clock), Script(clock, "ok"), req, clock)
    assert req.tried is None  # balancing makes it at the first failure it sent


async def test_cancellation_during_a_backoff_is_not_swallowed() -> None:
    clock = FakeClock()
    script = Script(clock, Unavailable("down"))
    task = asyncio.ensure_future(layer(clock)(request(), script))
    for _ in range(3):  # the first attempt fails, then the backoff begins
        await asyncio.sleep(0)
    assert len(script.times) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(script.times) == 1


@pytest.mark.parametrize(
    ("idempotent", "error", "expected"),
    [
        (True, Unavailable("x"), True),
        (True, Internal("x"), True),
        (False, Internal("x"), False),
        (True, Unavailable("x", retried=True), False),
        (True, NotFound("x"), False),
        (False, ResourceExhausted("x"), False),
        (True, ResourceExhausted("x"), False),
    ],
)
def test_retriable(idempotent: bool, error: FlotillaError, expected: bool) -> None:
    assert retriable(request(idempotent=idempotent), error) is expected


# -- a chain of three services, each retrying, and a failing leaf ------------------------------

REQUESTS = 40
# Backoffs of a millisecond or two: the test measures counts, not time.
QUICK = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.002)


class Leaf(Service, name="leaf"):
    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    @rpc(idempotent=True)
    async def get(self) -> int:
        self.calls["leaf"] += 1
        raise Unavailable("the leaf's database is down")


class Middle(Service, name="middle"):
    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    @rpc(idempotent=True)
    async def get(self, ctx: Context) -> int:
        self.calls["middle"] += 1
        result: int = await ctx.call("leaf.get")
        return result


class Front(Service, name="front"):
    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    @rpc(idempotent=True)
    async def get(self, ctx: Context) -> int:
        self.calls["front"] += 1
        result: int = await ctx.call("middle.get")
        return result


async def run_chain(budget: BudgetPolicy) -> tuple[Counter[str], list[Signals]]:
    """``REQUESTS`` calls to the front, every node retrying under ``budget``; the calls each
    service served, and every node's signals."""
    calls: Counter[str] = Counter()
    hubs: list[Signals] = []

    # Breakers off: the chain must keep reaching the leaf for the counts to be the retries'.
    policy = Policy(retry=QUICK, budget=budget, breaker=BreakerPolicy(state="disabled"))

    def layers() -> dict[str, Any]:
        hubs.append(Signals())
        return {"retry": Retry(uniform(policy), hubs[-1])}

    config = NodeConfig(timings=Timings(grace=0.0, drain=2.0))
    async with Cluster(config, layers=layers, policies=uniform(policy)) as cluster:
        for service in (Leaf(calls), Middle(calls), Front(calls)):
            await cluster.add(service)
        for _ in range(REQUESTS):
            with pytest.raises(Unavailable, match="database is down") as caught:
                await cluster.call("front.get")
            assert caught.value.retried  # the mark climbed the whole chain
    return calls, hubs


async def test_only_the_hop_next_to_the_failure_retries() -> None:
    # A reserve large enough that the budget never binds: what remains is the
    # marking alone.  Unmarked, 3 x 3 x 3 tries would reach the leaf 27 times.
    calls, _ = await run_chain(BudgetPolicy(ratio=0.2, min_per_second=100.0))
    assert calls == {"front": REQUESTS, "middle": REQUESTS, "leaf": 3 * REQUESTS}


async def test_with_the_budget_binding_attempts_stay_within_a_fifth_above_the_requests() -> None:
    calls, hubs = await run_chain(BudgetPolicy(ratio=0.2, min_per_second=0.0))
    assert calls["front"] == REQUESTS
    assert calls["middle"] == REQUESTS
    assert REQUESTS < calls["leaf"] <= 1.2 * REQUESTS
    total = calls["front"] + calls["middle"] + calls["leaf"]
    assert total <= 1.2 * 3 * REQUESTS
    exhausted = [s for hub in hubs for s in hub.recent if s.kind == SignalKind.BUDGET_EXHAUSTED]
    assert exhausted
    assert {s.service for s in exhausted} == {"leaf"}  # only the middle's calls met the limit

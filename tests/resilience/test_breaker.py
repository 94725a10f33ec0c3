"""The breaker's state machine under the fake clock, with exact numbers."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from flotilla.errors import (
    ConnectFailed,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from flotilla.resilience.breaker import Breaker, Outcome, Transition, outcome_of
from flotilla.resilience.policy import BreakerPolicy
from flotilla.testing.clock import FakeClock

# Threshold 50 %, at least 5 calls, no jitter: every figure below is exact.
# The rates alone (no trip on failures in a row), so the arithmetic below is the window's.
POLICY = BreakerPolicy(
    min_calls=5,
    failure_rate=0.5,
    consecutive_failures=None,
    open_base=5.0,
    open_max=60.0,
    jitter=0.0,
)


def make(policy: BreakerPolicy = POLICY) -> tuple[Breaker, FakeClock, list[Transition]]:
    clock = FakeClock()
    changes: list[Transition] = []
    return Breaker(clock, random_source=lambda: 0.5, on_transition=changes.append), clock, changes


def call(breaker: Breaker, outcome: Outcome, policy: BreakerPolicy = POLICY) -> None:
    permit = breaker.admit(policy)
    assert permit is not None, f"refused in state {breaker.state}"
    breaker.record(permit, policy, outcome)


def trip(breaker: Breaker, policy: BreakerPolicy = POLICY) -> None:
    for _ in range(policy.min_calls):
        call(breaker, "failure", policy)
    assert breaker.state == "open"


def test_three_failures_of_five_open_it() -> None:
    breaker, clock, changes = make()
    for outcome in ("success", "failure", "success", "failure"):
        call(breaker, outcome)  # type: ignore[arg-type]
    assert breaker.state == "closed"  # 2 of 4: under the minimum of 5 calls
    call(breaker, "failure")
    assert breaker.state == "open"
    assert breaker.open_until == clock.monotonic() + 5.0
    (change,) = changes
    assert (change.old, change.new, change.counts.calls, change.counts.failures) == (
        "closed",
        "open",
        5,
        3,
    )
    assert "60%" in change.reason
    assert breaker.admit(POLICY) is None


def test_the_success_that_makes_the_minimum_can_open_it() -> None:
    breaker, _, _ = make()
    for outcome in ("failure", "failure", "failure", "success"):
        call(breaker, outcome)  # type: ignore[arg-type]
    assert breaker.state == "closed"
    call(breaker, "success")  # 3 failures of 5 calls: 60 %
    assert breaker.state == "open"


def test_two_failures_of_five_leave_it_closed() -> None:
    breaker, _, changes = make()
    for outcome in ("failure", "success", "failure", "success", "success"):
        call(breaker, outcome)  # type: ignore[arg-type]
    assert breaker.state == "closed"
    assert changes == []


async def test_calls_that_left_the_window_no_longer_count() -> None:
    breaker, clock, _ = make()
    for _ in range(4):
        call(breaker, "failure")
    await clock.advance(POLICY.window)  # those four are out of the 10 s window
    call(breaker, "failure")
    assert breaker.state == "closed"
    assert breaker.counts(POLICY).calls == 1


def test_failures_in_a_row_trip_it_whatever_the_window_holds() -> None:
    policy = msgspec.structs.replace(POLICY, consecutive_failures=5)
    breaker, _, changes = make(policy)
    for _ in range(100):
        call(breaker, "success", policy)
    for _ in range(4):
        call(breaker, "failure", policy)
    call(breaker, "success", policy)  # the count starts again
    for _ in range(4):
        call(breaker, "failure", policy)
    assert breaker.state == "closed"  # 8 of 109 failed: 7 %, and never 5 in a row
    call(breaker, "failure", policy)
    assert breaker.state == "open"
    assert changes[-1].reason == "5 failures in a row"


async def test_the_open_time_doubles_with_each_trip_in_a_row() -> None:
    breaker, clock, _ = make()
    trip(breaker)
    opened_for = [breaker.open_until - clock.monotonic()]
    for _ in range(2):
        await clock.advance(breaker.open_until - clock.monotonic())
        call(breaker, "failure")  # the open time is over: a probe, and it fails
        opened_for.append(breaker.open_until - clock.monotonic())
    assert opened_for == [5.0, 10.0, 20.0]
    assert breaker.trips == 3


async def test_an_endpoint_that_fails_for_ever_keeps_the_breaker_at_its_cap() -> None:
    # 2.0 ** 1024 overflows: after 1025 trips in a row (17 minutes with a 1 s cap),
    # recording a failed probe must still reopen the breaker, not raise.
    policy = BreakerPolicy(open_base=0.1, open_max=1.0, jitter=0.0, min_calls=1)
    breaker, clock, _ = make(policy)
    call(breaker, "failure", policy)
    for _ in range(1100):
        await clock.advance(breaker.open_until - clock.monotonic())
        call(breaker, "failure", policy)  # the probe fails: open again
    assert breaker.trips == 1101
    assert breaker.open_until - clock.monotonic() == 1.0
    assert breaker.open_time(policy, 10**6) == 1.0


def test_the_open_time_is_capped_and_jittered() -> None:
    policy = BreakerPolicy(open_base=5.0, open_max=15.0, jitter=0.2)
    low = Breaker(FakeClock(), random_source=lambda: 0.0)
    high = Breaker(FakeClock(), random_source=lambda: 0.75)
    assert low.open_time(policy, 1) == pytest.approx(4.0)  # 5 - 20 %
    assert high.open_time(policy, 1) == pytest.approx(5.5)  # 5 + 10 %
    assert low.open_time(policy, 3) == pytest.approx(12.0)  # 20 capped at 15, - 20 %
    assert high.open_time(policy, 9) == pytest.approx(16.5)


async def test_half_open_admits_its_probes_and_closes_when_all_succeed() -> None:
    breaker, clock, changes = make()
    trip(breaker)
    await clock.advance(4.999)
    assert breaker.admit(POLICY) is None  # still open
    await clock.advance(0.001)
    probes = [breaker.admit(POLICY) for _ in range(3)]
    assert all(probe is not None for probe in probes)
    assert breaker.state == "half_open"
    assert breaker.admit(POLICY) is None  # the three probes are out: a fourth waits
    for probe in probes[:2]:
        assert probe is not None
        breaker.record(probe, POLICY, "success")
    assert breaker.state == "half_open"
    assert probes[2] is not None
    breaker.record(probes[2], POLICY, "success")
    assert breaker.state == "closed"
    assert breaker.trips == 0
    assert breaker.counts(POLICY).calls == 0  # the window starts afresh
    assert [change.new for change in changes] == ["open", "half_open", "closed"]


async def test_one_failed_probe_opens_it_again_for_longer() -> None:
    breaker, clock, changes = make()
    trip(breaker)
    await clock.advance(5.0)
    first, second = breaker.admit(POLICY), breaker.admit(POLICY)
    assert first is not None
    assert second is not None
    breaker.record(first, POLICY, "success")
    breaker.record(second, POLICY, "failure")
    assert breaker.state == "open"
    assert breaker.open_until == clock.monotonic() + 10.0  # second trip in a row
    assert changes[-1].reason == "a probe failed"


async def test_a_probe_that_ended_for_nothing_frees_its_slot() -> None:
    breaker, clock, _ = make(BreakerPolicy(half_open_probes=1, jitter=0.0))
    policy = BreakerPolicy(half_open_probes=1, jitter=0.0)
    trip(breaker, policy)
    await clock.advance(policy.open_base)
    probe = breaker.admit(policy)
    assert probe is not None
    assert breaker.admit(policy) is None
    breaker.record(probe, policy, "ignored")  # cancelled: it says nothing of the endpoint
    assert breaker.state == "half_open"
    again = breaker.admit(policy)
    assert again is not None
    breaker.record(again, policy, "success")
    assert breaker.state == "closed"


async def test_a_stuck_probe_counts_as_failed_after_its_time_left() -> None:
    breaker, clock, changes = make()
    trip(breaker)
    await clock.advance(5.0)
    stuck = breaker.admit(POLICY, time_left=2.0)
    assert stuck is not None
    await clock.advance(1.999)
    assert breaker.admit(POLICY) is not None  # a second probe: the first may still end
    await clock.advance(0.001)
    assert breaker.admit(POLICY) is None  # the first is out past its 2 s: open again
    assert breaker.state == "open"
    assert changes[-1].reason == "a probe never ended"
    assert breaker.open_until == clock.monotonic() + 10.0
    breaker.record(stuck, POLICY, "success")  # ends at last: from an earlier round, ignored
    assert breaker.state == "open"


async def test_a_stuck_probe_with_no_deadline_is_bounded_by_open_base() -> None:
    breaker, clock, _ = make()
    trip(breaker)
    await clock.advance(5.0)
    assert breaker.admit(POLICY) is not None
    await clock.advance(POLICY.open_base)
    assert breaker.admit(POLICY) is None
    assert breaker.state == "open"


async def test_slow_calls_trip_it_on_the_slow_call_rate() -> None:
    policy = BreakerPolicy(min_calls=4, slow_call_seconds=1.0, slow_call_rate=0.5, jitter=0.0)
    breaker, clock, changes = make(policy)
    for seconds in (0.5, 2.0, 0.5):
        permit = breaker.admit(policy)
        assert permit is not None
        await clock.advance(seconds)
        breaker.record(permit, policy, "success")
    assert breaker.state == "closed"  # 1 slow of 3
    permit = breaker.admit(policy)
    assert permit is not None
    await clock.advance(1.001)
    breaker.record(permit, policy, "success")
    assert breaker.state == "open"  # 2 slow of 4: 50 %
    assert "slow-call rate 50%" in changes[-1].reason


def test_an_outcome_from_before_a_transition_counts_for_nothing() -> None:
    breaker, _, _ = make()
    late = breaker.admit(POLICY)
    assert late is not None
    trip(breaker)
    breaker.record(late, POLICY, "failure")
    assert breaker.trips == 1


def test_forced_open_refuses_and_disabled_admits_without_counting() -> None:
    breaker, _, changes = make()
    assert breaker.admit(BreakerPolicy(state="forced_open")) is None
    disabled = BreakerPolicy(state="disabled", min_calls=1)
    for _ in range(10):
        call(breaker, "failure", disabled)
    assert breaker.state == "closed"
    assert breaker.counts(disabled).calls == 0
    assert changes == []


async def test_metrics_only_trips_and_signals_but_lets_every_call_through() -> None:
    policy = BreakerPolicy(state="metrics_only", min_calls=5, jitter=0.0)
    breaker, clock, changes = make(policy)
    trip(breaker, policy)
    assert breaker.admit(policy) is not None  # open, but only watching
    await clock.advance(5.0)
    probes = [breaker.admit(policy) for _ in range(5)]
    assert all(probe is not None for probe in probes)
    assert breaker.state == "half_open"
    assert [change.new for change in changes] == ["open", "half_open"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (None, "success"),
        (DeadlineExceeded("timed out"), "failure"),
        (Unavailable("gone"), "failure"),
        (Internal("bug"), "failure"),
        (ResourceExhausted("shed"), "ignored"),  # overloaded, not broken
        (ConnectFailed("refused"), "ignored"),  # the pool marks the address down instead
        (NotFound("no such item"), "success"),
        (InvalidArgument("bad id"), "success"),
        (FailedPrecondition("not yet"), "success"),
        (Unavailable("local bulkhead full", never_sent=True), "ignored"),
        (asyncio.CancelledError(), "ignored"),
    ],
)
def test_what_counts_as_a_failure(error: BaseException | None, expected: Outcome) -> None:
    assert outcome_of(error) == expected

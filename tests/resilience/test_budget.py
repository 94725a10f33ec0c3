"""The retry budget: exact counts under the fake clock (ratio of requests + a reserve per second,
over a window of ten slots)."""

from __future__ import annotations

from flotilla.resilience.budget import SIGNAL_INTERVAL, RetryBudget, RetryBudgets
from flotilla.resilience.policy import BudgetPolicy
from flotilla.resilience.signals import Signal, SignalKind, Signals
from flotilla.testing import FakeClock

# Slots of 1 s; the fake clock starts on a slot boundary (1_000_000.0).
RATIO_ONLY = BudgetPolicy(ratio=0.2, min_per_second=0.0, window=10.0)


def budget(policy: BudgetPolicy = RATIO_ONLY) -> tuple[RetryBudget, FakeClock]:
    clock = FakeClock()
    return RetryBudget(policy, clock), clock


def withdrawals(budget: RetryBudget, tries: int = 1000) -> int:
    """How many retries the budget grants in a row, now."""
    granted = 0
    while granted < tries and budget.try_withdraw():
        granted += 1
    return granted


def test_a_fresh_budget_with_no_reserve_allows_no_retry() -> None:
    fresh, _ = budget()
    assert fresh.available() == 0
    assert not fresh.try_withdraw()


def test_twenty_percent_of_the_requests_may_be_retried() -> None:
    counted, _ = budget()
    for _ in range(10):
        counted.deposit()
    assert counted.available() == 2.0
    assert withdrawals(counted) == 2
    assert counted.retries == 2
    assert counted.available() == 0.0


def test_a_fraction_of_a_retry_grants_none() -> None:
    counted, _ = budget()
    for _ in range(4):
        counted.deposit()  # 0.8 of a retry
    assert not counted.try_withdraw()
    counted.deposit()  # 1.0 (0.2 * 5, inexact in binary, still one)
    assert counted.try_withdraw()


def test_the_reserve_is_min_per_second_times_the_window() -> None:
    reserved, _ = budget(BudgetPolicy(ratio=0.2, min_per_second=10.0, window=10.0))
    assert reserved.available() == 100.0
    for _ in range(50):
        reserved.deposit()
    assert withdrawals(reserved) == 110  # 100 + 20 % of 50


async def test_requests_are_forgotten_when_the_window_has_passed_them() -> None:
    counted, clock = budget()
    await clock.advance(0.5)
    for _ in range(10):
        counted.deposit()
    await clock.advance(9.49)  # 9.99 s in: the tenth slot, still in the window
    assert counted.requests == 10
    assert counted.available() == 2.0
    await clock.advance(0.01)  # 10 s in: the slot of the requests leaves the window
    assert counted.requests == 0
    assert counted.available() == 0.0


async def test_spent_retries_are_refilled_as_the_window_moves() -> None:
    counted, clock = budget()
    for _ in range(10):
        counted.deposit()
    assert withdrawals(counted) == 2
    await clock.advance(5.0)
    for _ in range(10):
        counted.deposit()
    assert counted.available() == 2.0  # 20 requests earn 4, 2 already spent
    await clock.advance(5.0)  # the first 10 requests and both retries expire together
    assert (counted.requests, counted.retries) == (10, 0)
    assert withdrawals(counted) == 2


async def test_a_long_pause_clears_every_slot() -> None:
    counted, clock = budget()
    for second in range(10):
        counted.deposit()
        assert counted.requests == second + 1  # one per slot, all ten in the window
        await clock.advance(1.0)
    assert counted.requests == 9  # the first slot just left it
    assert counted.try_withdraw()
    await clock.advance(1000.0)
    assert (counted.requests, counted.retries) == (0, 0)


def exhausted(signals: Signals) -> list[Signal]:
    return [s for s in signals.recent if s.kind == SignalKind.BUDGET_EXHAUSTED]


async def test_refusals_are_signalled_at_most_once_per_interval_with_their_count() -> None:
    clock = FakeClock()
    signals = Signals()
    budgets = RetryBudgets(clock, signals)
    empty = budgets.get("catalog", RATIO_ONLY)
    for _ in range(3):
        assert not budgets.withdraw("catalog", empty, "get", "retry")
    (first,) = exhausted(signals)
    assert first.service == "catalog"
    assert first.method == "get"
    assert first.detail == {"refused": 1, "for": "retry", "requests": 0, "retries": 0}
    await clock.advance(SIGNAL_INTERVAL)
    assert not budgets.withdraw("catalog", empty, "get", "hedge")
    second = exhausted(signals)[-1]
    assert second.detail["refused"] == 3  # the two held back, and this one
    assert second.detail["for"] == "hedge"
    assert len(exhausted(signals)) == 2


def test_a_budget_per_service_renewed_when_its_policy_changes() -> None:
    budgets = RetryBudgets(FakeClock(), Signals())
    catalog = budgets.get("catalog", RATIO_ONLY)
    assert budgets.get("catalog", BudgetPolicy(ratio=0.2, min_per_second=0.0)) is catalog
    assert budgets.get("orders", RATIO_ONLY) is not catalog
    renewed = budgets.get("catalog", BudgetPolicy(ratio=0.5))
    assert renewed is not catalog
    assert renewed.policy.ratio == 0.5

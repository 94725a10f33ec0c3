"""The decaying latency histogram behind hedge delays."""

from __future__ import annotations

import pytest

from flotilla.resilience.latency import GROWTH, DecayingHistogram, LatencyTracker
from flotilla.testing import FakeClock


def histogram(clock: FakeClock | None = None, **options: float) -> DecayingHistogram:
    return DecayingHistogram(clock or FakeClock(), **options)


def test_no_estimate_before_enough_samples() -> None:
    few = histogram(min_samples=20)
    for _ in range(19):
        few.record(0.01)
    assert few.percentile(0.95) is None
    few.record(0.01)
    assert few.percentile(0.95) == DecayingHistogram.bound(0.01)


def test_a_bucket_bound_is_never_below_the_sample_and_within_the_growth() -> None:
    for seconds in (0.0001, 0.0123, 0.5, 3.0):
        bound = DecayingHistogram.bound(seconds)
        assert seconds <= bound < seconds * GROWTH


def test_the_percentile_is_the_bound_of_the_bucket_where_it_falls() -> None:
    mixed = histogram()
    for _ in range(95):
        mixed.record(0.010)
    for _ in range(5):
        mixed.record(1.0)
    assert mixed.percentile(0.95) == DecayingHistogram.bound(0.010)
    assert mixed.percentile(0.96) == DecayingHistogram.bound(1.0)
    assert mixed.percentile(0.5) == DecayingHistogram.bound(0.010)


def test_a_sample_past_the_last_bucket_counts_in_it() -> None:
    huge = histogram(min_samples=1)
    huge.record(10_000.0)
    assert huge.percentile(0.5) == DecayingHistogram.bound(10_000.0)
    assert DecayingHistogram.bound(10_000.0) >= 120.0


async def test_counts_halve_every_half_life() -> None:
    clock = FakeClock()
    decaying = histogram(clock, half_life=10.0, min_samples=20)
    for _ in range(20):
        decaying.record(0.01)
    await clock.advance(9.99)
    assert decaying.percentile(0.5) is not None
    await clock.advance(0.01)
    assert decaying.percentile(0.5) is None  # 10 left: too few
    assert decaying.total == 10.0


async def test_recent_samples_outweigh_old_ones() -> None:
    clock = FakeClock()
    decaying = histogram(clock, half_life=10.0)
    for _ in range(100):
        decaying.record(0.01)
    await clock.advance(30.0)  # three half-lives: the 100 weigh 12.5
    for _ in range(100):
        decaying.record(0.5)
    assert decaying.total == 112.5
    assert decaying.percentile(0.11) == DecayingHistogram.bound(0.01)  # 12.37 <= 12.5
    assert decaying.percentile(0.5) == DecayingHistogram.bound(0.5)


def test_a_bad_half_life_is_refused() -> None:
    with pytest.raises(ValueError, match="half_life"):
        histogram(half_life=0)


def test_the_tracker_keeps_one_histogram_per_method() -> None:
    tracker = LatencyTracker(FakeClock())
    assert tracker["catalog.get"] is tracker["catalog.get"]
    assert tracker["catalog.get"] is not tracker["catalog.list"]

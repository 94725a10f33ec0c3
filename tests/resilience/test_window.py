"""The sliding window: counts over the last ``seconds``, in buckets, with exact ageing."""

from __future__ import annotations

import pytest

from flotilla.resilience.window import Counts, SlidingWindow

T0 = 1_000.0  # a multiple of every bucket width below: bucket edges fall on round numbers


def test_counts_calls_failures_and_slow_calls() -> None:
    window = SlidingWindow(10.0)
    window.record(T0, failed=False, slow=False)
    window.record(T0 + 0.5, failed=True, slow=False)
    window.record(T0 + 1.0, failed=True, slow=True)
    counts = window.counts(T0 + 1.0)
    assert counts == Counts(calls=3, failures=2, slow=1)
    assert counts.failure_rate == pytest.approx(2 / 3)
    assert counts.slow_rate == pytest.approx(1 / 3)


def test_a_call_leaves_when_its_bucket_leaves_the_window() -> None:
    # Ten buckets of 1 s: a call at T0 + 0.2 is in bucket T0; that bucket is
    # in the window until the bucket T0 + 10 starts.
    window = SlidingWindow(10.0, buckets=10)
    window.record(T0 + 0.2, failed=True, slow=False)
    window.record(T0 + 5.0, failed=False, slow=False)
    assert window.counts(T0 + 9.99).calls == 2
    assert window.counts(T0 + 10.0) == Counts(calls=1, failures=0, slow=0)
    assert window.counts(T0 + 14.99).calls == 1
    assert window.counts(T0 + 15.0).calls == 0


def test_a_long_pause_clears_everything_at_once() -> None:
    window = SlidingWindow(2.0, buckets=4)
    for step in range(8):
        window.record(T0 + step * 0.25, failed=True, slow=True)
    assert window.counts(T0 + 1.9).calls == 8
    assert window.counts(T0 + 1_000_000.0) == Counts()
    window.record(T0 + 1_000_000.0, failed=False, slow=False)
    assert window.counts(T0 + 1_000_000.0) == Counts(calls=1)


def test_a_late_time_counts_in_the_newest_bucket() -> None:
    window = SlidingWindow(4.0, buckets=4)
    window.record(T0 + 3.5, failed=False, slow=False)
    window.record(T0 + 0.5, failed=True, slow=False)  # read late: not lost, not misplaced
    assert window.counts(T0 + 3.5) == Counts(calls=2, failures=1)
    assert window.counts(T0 + 7.0) == Counts()


def test_reset_forgets_every_call() -> None:
    window = SlidingWindow(10.0)
    window.record(T0, failed=True, slow=True)
    window.reset()
    assert window.counts(T0) == Counts()
    assert Counts().failure_rate == 0.0
    assert Counts().slow_rate == 0.0


def test_refuses_a_window_of_no_time() -> None:
    with pytest.raises(ValueError, match="positive"):
        SlidingWindow(0.0)

"""The load run's statistics: nearest-rank percentiles, error counts per route."""

from __future__ import annotations

from shop.load_stats import Recorder, percentile


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]  # 1 .. 100
    assert (percentile(ordered, 0.5), percentile(ordered, 0.9), percentile(ordered, 0.99)) == (
        50.0,
        90.0,
        99.0,
    )
    assert percentile([7.0], 0.99) == 7.0


def test_the_recorder_counts_errors_per_route() -> None:
    recorder = Recorder()
    recorder.record("view", 0.010, ok=True)
    recorder.record("view", 0.030, ok=False)
    recorder.record("order", 0.020, ok=True)
    assert (recorder.done, recorder.failed) == (3, 1)
    assert dict(recorder.errors) == {"view": 1}
    assert recorder.table(elapsed=1.0).row_count == 2

"""The load run's statistics: nearest-rank percentiles, error counts per route."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from shop.load_stats import KEEP_UP_SECONDS, Recorder, percentile, states_table


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
    recorder.record("view", 0.030, ok=False, status=503)
    recorder.record("order", 0.020, ok=True)
    assert (recorder.done, recorder.failed) == (3, 1)
    assert dict(recorder.errors) == {"view": 1}
    assert recorder.error_statuses["view"] == {503: 1}
    assert recorder.table(elapsed=1.0).row_count == 2


def test_the_generators_own_lag_says_whether_it_kept_up() -> None:
    recorder = Recorder()
    assert recorder.kept_up  # nothing started yet: nothing late
    for _ in range(99):
        recorder.started(0.001)
    recorder.started(KEEP_UP_SECONDS * 10)  # one late start in a hundred: p99 still on time
    assert recorder.kept_up
    assert "it kept up" in recorder.lag_line(cpu_seconds=0.1)
    recorder.started(KEEP_UP_SECONDS * 10)
    assert not recorder.kept_up
    assert "FELL BEHIND" in recorder.lag_line(cpu_seconds=0.1)
    assert recorder.lag(1.0) == KEEP_UP_SECONDS * 10


def test_orders_are_counted_by_final_state() -> None:
    states = Counter({"confirmed": 7, "cancelled out_of_stock": 2})
    table = states_table(states)
    assert table.row_count == 2
    assert table.title == "9 orders placed, by final state"


def test_the_states_title_stays_on_one_line_when_every_order_ends_alike() -> None:
    console = Console(width=200, record=True)
    console.print(states_table(Counter({"confirmed": 7})))
    assert "7 orders placed, by final state" in console.export_text()

"""What a load run measured: per route, how many requests, how many failed, their latencies.

Latency is from the time a request was *scheduled* (open loop), so a system
that falls behind shows it in its percentiles instead of slowing the arrivals.
"""

from __future__ import annotations

import math
from collections import defaultdict

from rich.table import Table

__all__ = ["Recorder", "percentile"]


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``ordered`` (sorted, not empty): 0.99 -> p99."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class Recorder:
    """Collects each request's outcome; ``table`` summarizes them per route."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)

    def record(self, route: str, seconds: float, ok: bool) -> None:
        self.latencies[route].append(seconds)
        if not ok:
            self.errors[route] += 1

    @property
    def done(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def progress(self, sent: int, elapsed: float) -> str:
        """The live line: sent, done, failed, throughput so far."""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return f"sent {sent}  done {self.done}  failed {self.failed}  {rate:.0f} req/s"

    def table(self, elapsed: float) -> Table:
        table = Table(title=f"{self.done} requests in {elapsed:.1f} s")
        for column in ("route", "requests", "req/s", "errors", "p50 ms", "p90 ms", "p99 ms"):
            table.add_column(column, justify="left" if column == "route" else "right")
        for route in sorted(self.latencies):
            ordered = sorted(self.latencies[route])
            millis = [f"{percentile(ordered, f) * 1000:.1f}" for f in (0.5, 0.9, 0.99)]
            error_rate = f"{100 * self.errors[route] / len(ordered):.1f} %"
            count = len(ordered)
            table.add_row(route, str(count), f"{count / elapsed:.1f}", error_rate, *millis)
        return table

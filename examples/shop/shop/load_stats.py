"""What a load run measured: per route, how many requests, how many failed, their latencies.

Latency is from the time a request was *scheduled* (open loop), so a system
that falls behind shows it in its percentiles instead of slowing the arrivals.
The generator's own lag (how late it *started* each request, past its
schedule) is kept apart: when the generator cannot keep up, its lag, not the
shop, is in those latencies, and the report says so.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from rich.table import Table

__all__ = ["KEEP_UP_SECONDS", "Recorder", "percentile", "states_table"]

KEEP_UP_SECONDS = 0.050
"""A generator whose p99 lag is past this is said to fall behind its schedule."""


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``ordered`` (sorted, not empty): 0.99 -> p99."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class Recorder:
    """Collects each request's outcome; ``table`` summarizes them per route."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_statuses: dict[str, Counter[int]] = defaultdict(Counter)
        """Per route, the wrong statuses it got (0: no answer at all)."""
        self.lags: list[float] = []
        """Per request started: seconds from its scheduled time to when it was sent."""

    def record(self, route: str, seconds: float, ok: bool, status: int = 0) -> None:
        self.latencies[route].append(seconds)
        if not ok:
            self.errors[route] += 1
            self.error_statuses[route][status] += 1

    def started(self, lag: float) -> None:
        """A request went out ``lag`` seconds after its scheduled time."""
        self.lags.append(lag)

    def lag(self, fraction: float) -> float:
        """The generator's lag percentile (0.0 before any request started)."""
        return percentile(sorted(self.lags), fraction) if self.lags else 0.0

    @property
    def kept_up(self) -> bool:
        """Whether the generator started its requests on time (p99 lag within 50 ms)."""
        return self.lag(0.99) <= KEEP_UP_SECONDS

    @property
    def done(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def progress(self, sent: int, elapsed: float) -> str:
        """The live line: sent, done, failed, throughput so far."""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        behind = self.lags[-1] * 1000 if self.lags else 0.0
        return (
            f"sent {sent}  done {self.done}  failed {self.failed}  {rate:.0f} req/s"
            f"  generator {behind:.0f} ms behind schedule"
        )

    def lag_line(self, cpu_seconds: float) -> str:
        """The generator's own lag and CPU cost, and whether it kept up."""
        millis = "/".join(f"{self.lag(f) * 1000:.1f}" for f in (0.5, 0.99, 1.0))
        cpu = 1000 * cpu_seconds / max(1, self.done)
        verdict = (
            "it kept up"
            if self.kept_up
            else "it FELL BEHIND its schedule: the latencies above include its own lag"
            " (lower --rate, or run it on a quieter machine)"
        )
        return (
            f"generator lag past schedule p50/p99/max {millis} ms, "
            f"{cpu:.2f} ms CPU per request: {verdict}"
        )

    def table(self, elapsed: float) -> Table:
        table = Table(title=f"{self.done} requests in {elapsed:.1f} s")
        columns = ("route", "requests", "req/s", "errors", "p50 ms", "p90 ms", "p99 ms", "got")
        for column in columns:
            table.add_column(column, justify="left" if column in ("route", "got") else "right")
        for route in sorted(self.latencies):
            ordered = sorted(self.latencies[route])
            millis = [f"{percentile(ordered, f) * 1000:.1f}" for f in (0.5, 0.9, 0.99)]
            error_rate = f"{100 * self.errors[route] / len(ordered):.1f} %"
            count = len(ordered)
            wrong = ", ".join(
                f"{status or 'no answer'} x{times}"
                for status, times in self.error_statuses[route].most_common(3)
            )
            table.add_row(route, str(count), f"{count / elapsed:.1f}", error_rate, *millis, wrong)
        return table


def states_table(states: Counter[str]) -> Table:
    """The run's orders by final state (``cancelled`` split by reason)."""
    title = f"{sum(states.values())} orders placed, by final state"
    # At least as wide as its title: a run whose orders all end in one short
    # state (no stock ran out) would otherwise wrap the title over two lines.
    table = Table(title=title, min_width=len(title))
    table.add_column("state")
    table.add_column("orders", justify="right")
    for state, count in sorted(states.items()):
        table.add_row(state, str(count))
    return table

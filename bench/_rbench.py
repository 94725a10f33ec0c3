"""What the resilience bench's cases share: the table's rows, the phases, small helpers.

See ``resilience.py``; the cases are in ``_rcases.py`` (one replica slow, dead
or broken) and ``_rcases_load.py`` (stalls, overload, a chain's retries).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from _rcluster import Replicas, policy_json, run_load
from rpc import Children

REPLICAS = 5
SERVICE_TIME = 0.002  # seconds per bench.work call on a healthy replica
CONCURRENCY = 8  # closed-loop calls in flight


class Row(NamedTuple):
    """One line of the table; ``ok`` None: no target (a comparison) or not measurable."""

    case: str
    figure: str
    value: str
    baseline: str
    ratio: str
    target: str
    ok: bool | None


class Bench:
    """What every case needs: the processes, the phase lengths, the rows so far."""

    def __init__(self, children: Children, workdir: Path, warmup: float, seconds: float) -> None:
        self.children = children
        self.workdir = workdir
        self.warmup = warmup
        self.seconds = seconds
        self.rows: list[Row] = []
        self.figures: dict[str, dict[str, Any]] = {}
        """Each case's raw results, by case letter (what ``--json`` keeps)."""

    def replicas(self, extra: Callable[[int], list[str]] = lambda i: []) -> Replicas:
        return Replicas(self.children, self.workdir, REPLICAS, extra)

    def load(self, replicas: Replicas, *options: str, **kwargs: Any) -> dict[str, Any]:
        """One load client's run; ``warmup`` and ``seconds`` default to the bench's."""
        kwargs.setdefault("warmup", self.warmup)
        kwargs.setdefault("seconds", self.seconds)
        return run_load(self.children, replicas, list(options), **kwargs)

    def row(self, *fields: Any) -> None:
        self.rows.append(Row(*fields))

    def missing(self, case: str, figure: str, what: str) -> None:
        self.row(case, figure, f"n/a: {what}", "", "", "", None)


def missing_layer(*modules: str) -> str | None:
    """What of ``flotilla.resilience.<module>`` this checkout lacks, or None."""
    absent = [m for m in modules if importlib.util.find_spec(f"flotilla.resilience.{m}") is None]
    return f"{', '.join(absent)} not in this checkout" if absent else None


def faults(**fields: Any) -> list[str]:
    return ["--faults", policy_json(**fields)]


def ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.1f} ms"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f} %" if whole else "-"


def success(result: dict[str, Any]) -> float:
    done = result["ok"] + result["failed"]
    return result["ok"] / done if done else 0.0

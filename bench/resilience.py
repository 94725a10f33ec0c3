"""Resilience bench: five replicas in separate processes, six failure cases side by side.

    .venv/bin/python bench/resilience.py                  # every case, 3 s per phase
    .venv/bin/python bench/resilience.py --quick          # 1 s phases, a smoke run
    .venv/bin/python bench/resilience.py --case a,c --seconds 5

Each case starts its own replicas (``_replica.py``: one SQLite registry file,
one secret, five processes), runs one or more load clients (``_rload.py``)
against them and prints rows of one table: the figure, the baseline measured
in the same run, their ratio, the target, PASS or MISS.  A case whose layer is
not in this checkout prints ``n/a`` and what is missing, never a figure.

    a  one replica 50x slower: p99 with P2C <= 1.5x the all-healthy p99 (round robin beside it)
    b  one replica SIGKILLed mid-run: success >= 99.9 % with retries on idempotent calls
    c  one replica answering errors: traffic leaves it within 1 s (its breaker opens)
    d  every replica stalls 1 % of calls for 1 s: hedging halves p99
    e  open-loop load at 2x capacity: the bulkhead sheds, admitted p99 <= 3x unloaded p99
    f  front -> middle -> leaf with a failing leaf: leaf attempts <= 1.2x the requests

Misbehaviour comes from a :class:`~flotilla.resilience.policy.FaultPolicy` given
to the replica (see ``_replica.py``).  Every process dies with this driver.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from _rcluster import Replicas, policy_json, run_load
from rpc import Children, _cpu_sample, busy_cpus, source_state

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
        return run_load(
            self.children,
            replicas,
            list(options),
            warmup=self.warmup,
            seconds=self.seconds,
            **kwargs,
        )

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


# -- the cases ------------------------------------------------------------------------------


def case_a(bench: Bench) -> None:
    """One replica 50x slower than the rest: P2C keeps p99 near the healthy one."""
    slow = faults(delay=49 * SERVICE_TIME, delay_fraction=1.0)
    replicas = bench.replicas(lambda i: slow if i == 0 else [])
    try:
        closed = ["--concurrency", str(CONCURRENCY)]
        healthy = bench.load(replicas, *closed, "--strategy", "p2c")
        replicas.arm(0)
        p2c = bench.load(replicas, *closed, "--strategy", "p2c")
        rr = bench.load(replicas, *closed, "--strategy", "round_robin")
    finally:
        replicas.close()
    bench.figures["a"] = {"healthy": healthy, "p2c": p2c, "round_robin": rr}
    base = healthy["p99_us"]
    case = "a. one replica 50x slower"
    for name, result, target in (("P2C", p2c, 1.5), ("round robin", rr, None)):
        ratio = result["p99_us"] / base
        bench.row(
            case,
            f"p99, {name}",
            ms(result["p99_us"]),
            f"all healthy, P2C: {ms(base)}",
            f"{ratio:.2f}x",
            f"<= {target}x" if target else "(comparison)",
            ratio <= target if target else None,
        )


def _killed_run(bench: Bench, *options: str) -> dict[str, Any]:
    """A closed-loop run on fresh replicas, replica 0 SIGKILLed halfway through the window."""
    replicas = bench.replicas()
    try:
        return bench.load(
            replicas,
            "--concurrency",
            str(CONCURRENCY),
            *options,
            action=lambda: replicas.kill(0),
            action_after=bench.seconds / 2,
        )
    finally:
        replicas.close()


def case_b(bench: Bench) -> None:
    """One replica SIGKILLed mid-run: what share of calls still succeeds."""
    case = "b. one replica killed"
    base = _killed_run(bench, "--policy", policy_json(retry={"max_attempts": 1}))
    baseline = f"no retries: {success(base):.3%} ({base['failed']} failed)"
    lacking = missing_layer("retry", "budget")
    if lacking is not None:
        bench.missing(case, "success with retries", lacking)
        bench.row(case, "success, no retries", f"{success(base):.3%}", "", "", "", None)
        return
    got = _killed_run(bench)
    bench.row(
        case,
        "success with retries",
        f"{success(got):.3%} ({got['failed']} of {got['ok'] + got['failed']} failed)",
        baseline,
        "",
        ">= 99.900 %",
        success(got) >= 0.999,
    )


def _share(replicas: Replicas, index: int) -> tuple[int, int]:
    """(calls replica ``index`` received, calls all live replicas received) so far."""
    stats = replicas.stats()
    mine = stats[index]
    assert mine is not None
    total = sum(s["calls"].get("bench.work", 0) for s in stats if s is not None)
    return mine["calls"].get("bench.work", 0), total


def _broken_run(bench: Bench, strategy: str) -> tuple[float, float, dict[str, Any], str]:
    """Replica 0 answers errors from a quarter into the window; then the breakers are switched
    off on the same replicas.  Returns (first error -> last call it got, -> breaker.opened
    or NaN, the guarded run, the share of calls it got with the breakers off)."""
    broken = faults(error="internal", error_fraction=1.0)
    replicas = bench.replicas(lambda i: broken if i == 0 else [])
    closed = ["--concurrency", str(CONCURRENCY), "--strategy", strategy]
    try:
        # The breaker's shortest open time (open_base 5 s less 20 % jitter) is
        # longer than the rest of the window: a call after the trip is a leak, not a probe.
        guarded = bench.load(
            replicas, *closed, action=lambda: replicas.arm(0), action_after=bench.seconds / 4
        )
        stats = replicas.stats()[0]
        bad0, total0 = _share(replicas, 0)
        bench.load(replicas, *closed, "--policy", policy_json(breaker={"state": "disabled"}))
        bad1, total1 = _share(replicas, 0)
    finally:
        replicas.close()
    assert stats is not None
    first_error = stats["first_call_armed_at"]
    if first_error is None:
        raise RuntimeError("case c: no call reached the broken replica after its faults began")
    left = stats["last_call_at"]["bench.work"] - first_error
    opened = guarded["signals"]["first_at"].get("breaker.opened", math.nan) - first_error
    return left, opened, guarded, pct(bad1 - bad0, total1 - total0)


def case_c(bench: Bench) -> None:
    """One replica starts answering errors mid-run: how soon its traffic stops."""
    case = "c. one replica answers errors"
    for strategy in ("p2c", "round_robin"):
        left, opened, guarded, share = _broken_run(bench, strategy)
        name = "P2C" if strategy == "p2c" else "round robin"
        bench.row(
            case,
            f"{name}: first error -> last call it got",
            f"{left:.3f} s",
            f"breakers off: it still got {share} of calls",
            "",
            "<= 1 s",
            left <= 1.0,
        )
        bench.row(
            case,
            f"{name}: first error -> breaker.opened",
            "never" if math.isnan(opened) else f"{opened:.3f} s",
            f"{guarded['failed']} errors reached the caller",
            "",
            "(comparison)",
            None,
        )


def case_d(bench: Bench, rate: float) -> None:
    """Every replica stalls 1 % of its calls for 1 s: hedging against none."""
    case = "d. 1 % of calls stall 1 s"
    stall = faults(delay=1.0, delay_fraction=0.01)
    replicas = bench.replicas(lambda i: [*stall, "--armed"])
    lacking = missing_layer("hedge")
    try:
        plain = bench.load(replicas, "--rate", str(rate))
        hedged = None
        if lacking is None:
            hedge = policy_json(hedge={"enabled": True})
            hedged = bench.load(replicas, "--rate", str(rate), "--policy", hedge)
    finally:
        replicas.close()
    for figure, key in (("p99", "p99_us"), ("p99.9", "p999_us")):
        baseline = f"no hedging: {ms(plain[key])}"
        if hedged is None:
            bench.row(case, f"{figure} hedged", f"n/a: {lacking}", baseline, "", "", None)
            continue
        ratio = hedged[key] / plain[key]
        bench.row(
            case,
            f"{figure} hedged",
            ms(hedged[key]),
            baseline,
            f"{ratio:.2f}x",
            "<= 0.5x",
            ratio <= 0.5,
        )


def case_e(bench: Bench, workers: int, service_time: float) -> None:
    """Open-loop arrivals at twice the capacity: shed the excess, keep the admitted fast."""
    case = "e. offered load 2x capacity"
    capacity = REPLICAS * workers / service_time
    pool = ["--workers", str(workers), "--service-time", str(service_time)]
    replicas = bench.replicas(lambda i: pool)
    try:
        unloaded = bench.load(replicas, "--rate", str(capacity / 4))
        overloaded = bench.load(replicas, "--rate", str(capacity * 2))
    finally:
        replicas.close()
    base = unloaded["p99_us"]
    offered = f"{capacity * 2:.0f}/s offered, capacity {capacity:.0f}/s"
    lacking = missing_layer("bulkhead")
    bench.row(
        case,
        "admitted p99, no bulkhead",
        ms(overloaded["p99_us"]),
        f"unloaded: {ms(base)}",
        f"{overloaded['p99_us'] / base:.1f}x",
        "(comparison)",
        None,
    )
    if lacking is not None:
        bench.missing(case, "admitted p99, bulkhead", lacking)
    del offered


def case_f(bench: Bench) -> None:
    """A chain front -> middle -> leaf whose leaf always fails: attempts per request."""
    case = "f. chain, failing leaf"
    lacking = missing_layer("retry", "budget")
    if lacking is not None:
        bench.missing(case, "leaf attempts / request", lacking)
        return
    chain = [
        "--chain",
        *faults(error="unavailable", error_fraction=1.0),
        "--faults-service",
        "leaf",
        "--armed",
    ]
    replicas = bench.replicas(lambda i: chain)
    try:
        before = {t: replicas.calls(f"{t}.work") for t in ("front", "middle", "leaf")}
        result = bench.load(replicas, "--concurrency", "4", "--target", "front.work")
        after = {t: replicas.calls(f"{t}.work") for t in ("front", "middle", "leaf")}
    finally:
        replicas.close()
    requests = result["calls_started"]
    hops = {t: (after[t] - before[t]) / requests for t in after}
    bench.row(
        case,
        "leaf attempts / request",
        f"{hops['leaf']:.2f}",
        f"{requests} requests; front {hops['front']:.2f}, middle {hops['middle']:.2f} per request",
        f"{hops['leaf']:.2f}x",
        "<= 1.2x",
        hops["leaf"] <= 1.2,
    )


# -- report and main ------------------------------------------------------------------------

HEADER = ("case", "figure", "value", "baseline (same run)", "ratio", "target", "")


def print_table(rows: list[Row]) -> None:
    cells = [HEADER] + [(*row[:6], _verdict(row.ok, row.value)) for row in rows]
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(HEADER))]
    for line in cells:
        print(
            "  "
            + "  ".join(
                str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)
            ).rstrip()
        )


def _verdict(ok: bool | None, value: str) -> str:
    if ok is None:
        return "n/a" if value.startswith("n/a") else ""
    return "PASS" if ok else "MISS"


def run_cases(bench: Bench, cases: str, quick: bool) -> None:
    # Lighter loads in a smoke run; the ratios hold, the tails are noisier.
    stall_rate = 500.0 if quick else 1000.0
    every: dict[str, Callable[[], None]] = {
        "a": lambda: case_a(bench),
        "b": lambda: case_b(bench),
        "c": lambda: case_c(bench),
        "d": lambda: case_d(bench, stall_rate),
        "e": lambda: case_e(bench, workers=4, service_time=0.02),
        "f": lambda: case_f(bench),
    }
    for name in cases:
        print(f"case {name} ...", flush=True)
        every[name]()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per phase (3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds per phase (0.5)")
    parser.add_argument("--quick", action="store_true", help="1 s phases, 0.3 s warm-up")
    parser.add_argument("--case", default="abcdef", help="which cases, e.g. a,c (all)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    cases = args.case.replace(",", "")
    unknown = set(cases) - set("abcdef")
    if unknown:
        parser.error(f"unknown case(s) {','.join(sorted(unknown))}; the cases are a to f")
    if args.quick:
        args.seconds, args.warmup = 1.0, 0.3

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="flotilla-rbench-"))
    children = Children(workdir)
    try:
        print(
            f"flotilla resilience bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
            f"{REPLICAS} replicas; {args.warmup:g} s warm-up + {args.seconds:g} s per phase; "
            f"{source_state()}"
        )
        print(f"  other load on the machine: {busy_cpus():.2f} CPUs busy just before", flush=True)
        bench = Bench(children, workdir, args.warmup, args.seconds)
        busy0, ours0 = _cpu_sample()
        wall0 = time.monotonic()
        try:
            run_cases(bench, cases, args.quick)
        finally:
            busy1, ours1 = _cpu_sample()
            other = max(busy1 - busy0 - (ours1 - ours0), 0.0) / (time.monotonic() - wall0)
            print(f"  other load during the run: {other:.2f} CPUs on average (outside the bench)")
            print()
            print_table(bench.rows)
        if args.json is not None:
            kept = {"args": {k: str(v) for k, v in vars(args).items()}, "source": source_state()}
            kept |= {"other_cpus": other, "rows": [r._asdict() for r in bench.rows]}
            args.json.write_text(json.dumps({**kept, "figures": bench.figures}, indent=2))
        return 0  # PASS/MISS is printed; the exit status says whether the bench itself ran
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

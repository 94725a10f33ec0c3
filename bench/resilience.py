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
    b  one replica SIGKILLed mid-run: success >= 99.9 % with retries (without: the baseline)
    c  one replica starts answering errors once the caller has a breaker window of healthy
       calls behind it: traffic leaves it within 1 s; P2C and round robin, breakers off beside
    d  every replica stalls 1 % of calls for 1 s: hedging halves p99 (p99 sits on the edge of
       the stalled 1 %, so p99.9 is shown too)
    e  open-loop load at 2x capacity: the bulkhead sheds, admitted p99 <= 3x the unloaded p99;
       with the default breakers and with breakers off, no bulkhead beside
    f  front -> middle -> leaf, every leaf failing, budgets in their steady state: leaf
       attempts <= 1.2x the requests (breakers off: retries alone; the defaults beside)

Misbehaviour comes from a :class:`~flotilla.resilience.policy.FaultPolicy` given
to the replica (see ``_replica.py``).  Every process dies with this driver.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _rbench import REPLICAS, Bench, Row
from _rcases import case_a, case_b, case_c
from _rcases_load import case_d, case_e, case_f
from rpc import Children, _cpu_sample, busy_cpus, source_state

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
            kept: dict[str, Any] = {
                "args": {k: str(v) for k, v in vars(args).items()},
                "source": source_state(),
                "other_cpus": other,
                "rows": [row._asdict() for row in bench.rows],
                "figures": bench.figures,
            }
            args.json.write_text(json.dumps(kept, indent=2))
        return 0  # PASS/MISS is printed; the exit status says whether the bench itself ran
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

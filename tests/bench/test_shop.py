"""A smoke run of ``bench/shop.py``: the shop bench still runs end to end.

No figure is judged (benchmarks are not timed tests, and this machine may be
busy): a very short run must start the shop, place and settle its orders,
read, compare the gateway with a direct call, and print every line.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "shop.py"


def test_a_short_run_prints_every_figure() -> None:
    options = ["--order-rate", "5", "--seconds", "1", "--get-rate", "10", "--calls", "50"]
    run = subprocess.run(
        [sys.executable, str(BENCH), *options], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"^commit \w+; \d+ CPUs; load average ", out, re.MULTILINE), out
    sent = re.search(r"orders at 5/s for 1 s: sent (\d+), accepted (\d+), confirmed (\d+)", out)
    assert sent is not None, out
    assert sent.group(1) == sent.group(2) == sent.group(3) == "5"  # every order settled
    assert "POST /api/orders at 5/s: p50" in out
    assert re.search(r"GET /api/products/\{id\} at 10/s: p50 .* 0 errors", out), out
    assert re.search(r"gateway overhead, concurrency 1: .* ratio \d+\.\d+ \(target", out), out

"""A smoke run of ``bench/resilience.py``: the bench still runs against today's API.

No figure is judged here (benchmarks are not timed tests); what is checked
holds however busy the machine is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "resilience.py"


def test_case_a_runs_and_its_slow_replica_is_slow(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    command = [sys.executable, str(BENCH), "--case", "a", "--seconds", "0.5", "--warmup", "0.2"]
    run = subprocess.run(
        [*command, "--json", str(out)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    kept = json.loads(out.read_text())
    rows = [row for row in kept["rows"] if row["case"].startswith("a.")]
    assert [row["figure"] for row in rows] == ["p99, P2C", "p99, round robin"]
    assert rows[0]["ok"] in (True, False)  # judged PASS or MISS, not n/a
    # Round robin sends every fifth call to the slow replica, whose injected
    # delay (49 x 2 ms) is a sleep: its p99 is at least that on any machine.
    assert kept["figures"]["a"]["round_robin"]["p99_us"] >= 98_000
    assert "PASS" in run.stdout or "MISS" in run.stdout

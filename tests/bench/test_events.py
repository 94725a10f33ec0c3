"""A smoke run of ``bench/events.py`` on the embedded log: the bench still runs end to end.

No figure is judged (benchmarks are not timed tests); what is checked holds
however busy the machine is (the rate window grows until it has handled some
events): every case handled events, every latency event
emitted in the window was handled, and the targets are judged or said to be
not measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "events.py"


def test_the_embedded_cases_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    options = ["--backend", "embedded", "--postgres", "", "--seconds", "0.5", "--warmup", "0.3"]
    # A busy machine may handle few or no events in half a second: the window
    # grows until it has handled some (16 s without one is a real failure).
    options += ["--min-events", "20", "--max-seconds", "16"]
    options += ["--rate", "50", "--quiet-wait", "0"]
    command = [sys.executable, str(BENCH), *options, "--json", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(out.read_text())
    assert sorted(figures) == ["embedded ctx.emit", "embedded outbox/inbox"]
    for case in figures.values():
        assert case["events_per_s"] > 0
        assert case["latency_events"] > 0
        assert case["latency_lost"] == 0  # the tail gives the last ones time to arrive
        assert case["p50_ms"] > 0
    assert "embedded outbox/inbox p50 <= 5.0 ms:" in run.stdout
    assert "jetstream outbox/inbox >= 0.7x bare rate: not measured" in run.stdout

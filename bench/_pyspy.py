"""Sampling profiles with py-spy: attach to a running bench process, then sum its stacks.

py-spy reads the interpreter's stacks from outside the process (no hook per
call), so unlike cProfile it barely slows the code it watches and does not
inflate the cost of small functions.  It is not a dependency of flotilla:
``bench/rpc.py --profile DIR --profiler py-spy`` installs it into the bench's
interpreter environment on first use.

Samples are taken only while the process is on a CPU (py-spy leaves idle
threads out), so a function's share of the samples is its share of the
process's CPU time; multiplied by the CPU per call measured without a
profiler, it becomes microseconds per call.  Time spent in C code (uvloop's
loop, the socket system calls, msgspec) is counted in the innermost Python
frame that called it: the event loop's ``run`` holds the loop's own work.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

RATE = 997  # samples per second; prime, so it does not beat with the loop's timers


def executable() -> str | None:
    """The py-spy next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def install() -> str:
    """py-spy for this interpreter, installed with its pip if it is missing."""
    found = executable()
    if found is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"],
            check=True,
        )
        found = executable()
    if found is None:
        raise RuntimeError("py-spy is not installed and pip could not install it")
    return found


def attach(py_spy: str, pid: int, output: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Start recording ``pid`` for ``seconds`` into ``output`` (collapsed stacks)."""
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(int(seconds), 1)),
            "--rate",
            str(RATE),
            "--format",
            "raw",
            "--nonblocking",  # never pause the process: no distortion of its timing
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _frame_name(frame: str) -> str:
    """``name (path/to/module.py:123)`` -> ``module.py:name`` (one entry per function)."""
    name, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{module}:{name}" if module else name


def load(path: Path) -> list[tuple[list[str], int]]:
    """The recorded stacks, outermost frame first, each with its sample count."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append(([_frame_name(f) for f in stack.split(";")], int(count)))
    return stacks


def summary(path: Path, cpu_us_per_call: float, top: int = 20) -> str:
    """The functions with the most own time and the most inclusive time, in µs per call."""
    stacks = load(path)
    total = sum(count for _, count in stacks)
    if not total:
        return f"{path}: no samples"
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [
        f"{path.name}: {total} samples; {cpu_us_per_call:.1f} µs CPU per call without profiler",
        f"  {'own %':>6} {'µs/call':>8}   function (own time)",
    ]
    for name, count in own.most_common(top):
        share = count / total
        lines.append(f"  {share:6.1%} {share * cpu_us_per_call:8.2f}   {name}")
    lines.append(f"  {'incl %':>6} {'µs/call':>8}   function (inclusive)")
    for name, count in inclusive.most_common(top):
        share = count / total
        lines.append(f"  {share:6.1%} {share * cpu_us_per_call:8.2f}   {name}")
    return "\n".join(lines)

"""The measuring loop shared by every bench client process (raw and flotilla alike).

``concurrency`` asyncio tasks each loop ``await call()``.  After ``warmup``
seconds the measurement window opens for ``seconds``: every call that
*completes* inside the window is counted and its latency (perf_counter_ns
around the await) is stored in a preallocated array.  Nothing here allocates
per call besides what ``call`` itself does.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from array import array
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

# More calls per second than either client can possibly make on one core.
_MAX_RATE = 400_000


async def measure(
    call: Callable[[], Awaitable[Any]],
    *,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    capacity = int(seconds * _MAX_RATE) + 1024
    latencies = array("q", bytes(8 * capacity))
    measuring = False
    stop = False
    recorded = 0
    completed = 0  # in the window, recorded or not (the array could in theory fill up)
    total = 0  # all calls, warm-up included
    errors = 0
    first_error: str | None = None

    async def worker() -> None:
        nonlocal recorded, completed, total, errors, first_error
        while not stop:
            t0 = perf_counter_ns()
            try:
                await call()
            except Exception as exc:
                if measuring:
                    errors += 1
                    if first_error is None:
                        first_error = repr(exc)
                continue
            t1 = perf_counter_ns()
            total += 1
            if measuring:
                completed += 1
                if recorded < capacity:
                    latencies[recorded] = t1 - t0
                    recorded += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        io_before = io_counters()
        cpu_before = os.times()
        measuring = True
        start = perf_counter_ns()
        await asyncio.sleep(seconds)
        measuring = False
        end = perf_counter_ns()
        cpu_after = os.times()
        io_after = io_counters()
        stop = True
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()

    window = (end - start) / 1e9
    ordered = sorted(latencies[:recorded])

    def percentile(q: float) -> float:
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0

    return {
        "concurrency": concurrency,
        "window_s": window,
        "calls": completed,
        "total_calls": total,
        "calls_per_s": completed / window,
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
        "mean_us": (sum(ordered) / len(ordered) / 1000.0) if ordered else float("nan"),
        # What the client process spent per call: CPU (user + system) and syscalls.
        "cpu_us_per_call": (
            (cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system)
            / max(completed, 1)
            * 1e6
        ),
        "cpu_busy": (cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system)
        / window,
        "reads_per_call": (io_after["syscr"] - io_before["syscr"]) / max(completed, 1),
        "writes_per_call": (io_after["syscw"] - io_before["syscw"]) / max(completed, 1),
        "errors": errors,
        "first_error": first_error,
        "pid": os.getpid(),
    }


def emit(result: dict[str, Any]) -> None:
    """The one line of JSON the driver reads from a client's stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def io_counters(pid: int | str = "self") -> dict[str, int]:
    """/proc/<pid>/io: syscr and syscw count read- and write-type system calls."""
    with open(f"/proc/{pid}/io") as io:
        return {key: int(value) for key, value in (line.split(": ") for line in io)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

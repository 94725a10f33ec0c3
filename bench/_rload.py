"""The load generator of the resilience bench: one flotilla client process, closed or open loop.

    python bench/_rload.py --registry ... --secret HEX --target bench.work \
        (--concurrency 8 | --rate 2000) [--warmup 0.5] [--seconds 3] \
        [--strategy p2c] [--policy '{"retry": {"max_attempts": 1}}']

*Closed loop* (``--concurrency``): that many tasks each call, wait, call again.
*Open loop* (``--rate``): calls start at a fixed rate whatever the answers, and
each latency runs from the call's *scheduled* start, so a stalled server cannot
hide its queue by slowing the arrivals (no coordinated omission).

stdout, one JSON line each: ``{"measuring": true, "at": t}`` when the measured
window opens (the driver times its actions from it), then the result: calls
started in the window (ok, and failed by error code), percentiles of the
successful ones, every call made over the process's life, and the resilience
signals the client's node emitted (each kind's count, first time and endpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import _loadgen
import msgspec

from flotilla import FlotillaError, Node, NodeConfig
from flotilla.resilience.config import PolicyTable
from flotilla.resilience.policy import Policy
from flotilla.resilience.signals import Signal
from flotilla.runtime.serve import run_loop

Call = Callable[[], Awaitable[Any]]


class Record:
    """What the window saw: latencies of successes, failures by code, and every call made."""

    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()
        self.first_failure: dict[str, str] = {}
        self.started = 0  # every call, warm-up included (the chain case divides by it)

    async def timed(self, call: Call, since: float) -> None:
        """Await one call; a latency counts from ``since`` (perf_counter seconds).

        A call belongs to the window it *started* in, and the window's calls are
        all awaited: a call stalled past the window's end still counts.
        """
        self.started += 1
        counted = self.measuring
        try:
            await call()
        except FlotillaError as exc:
            if counted:
                self.failures[exc.code] += 1
                self.first_failure.setdefault(exc.code, str(exc)[:300])
            return
        if counted:
            self.latencies.append(time.perf_counter() - since)

    def result(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def percentile(q: float) -> float | None:
            if not ordered:
                return None
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6

        failed = sum(self.failures.values())
        return {
            "ok": len(ordered),
            "failed": failed,
            "failures": dict(self.failures),
            "first_failure": self.first_failure,
            "calls_started": self.started,
            "p50_us": percentile(0.50),
            "p99_us": percentile(0.99),
            "p999_us": percentile(0.999),
            "max_us": ordered[-1] * 1e6 if ordered else None,
        }


async def closed_loop(call: Call, record: Record, concurrency: int, stop: asyncio.Event) -> None:
    async def worker() -> None:
        while not stop.is_set():
            await record.timed(call, time.perf_counter())

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())


async def open_loop(call: Call, record: Record, rate: float, stop: asyncio.Event) -> None:
    """Start calls at ``rate`` per second until ``stop``; then wait for those in flight."""
    start = time.perf_counter()
    launched = 0
    async with asyncio.TaskGroup() as group:
        while not stop.is_set():
            # Launch every call due by now, each timed from its own due time, so
            # the loop's wake-up jitter neither drops nor delays arrivals.
            due = int((time.perf_counter() - start) * rate)
            while launched < due:
                launched += 1
                group.create_task(record.timed(call, start + launched / rate))
            await asyncio.sleep(0.001)


class SignalLog:
    """Each kind of signal the client's node emitted: how many, and when first (Unix seconds),
    in all and per endpoint."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first_at: dict[str, float] = {}
        self.first_at_by_endpoint: dict[str, dict[str, float]] = {}

    def __call__(self, signal: Signal) -> None:
        self.counts[signal.kind] += 1
        self.first_at.setdefault(signal.kind, signal.at)
        if signal.endpoint is not None:
            by_endpoint = self.first_at_by_endpoint.setdefault(signal.kind, {})
            by_endpoint.setdefault(signal.endpoint, signal.at)

    def report(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "first_at": self.first_at,
            "first_at_by_endpoint": self.first_at_by_endpoint,
        }


def client_node(args: argparse.Namespace) -> Node:
    """A pure-client node; ``--policy`` is the system level of its ``[resilience]`` table."""
    policy = msgspec.json.decode(args.policy, type=Policy) if args.policy else Policy()
    config = NodeConfig(
        registry=args.registry,
        secret=bytes.fromhex(args.secret),
        strategy=args.strategy,
        resilience=PolicyTable(system=policy),
    )
    return Node(config=config)


async def _run(args: argparse.Namespace) -> None:
    log, record, stop = SignalLog(), Record(), asyncio.Event()
    async with client_node(args) as node:
        node.signals.listen(log)
        # Discovery and the first connection; the call itself may meet a broken replica.
        with contextlib.suppress(FlotillaError):
            await node.call(args.target, n=1)

        def call() -> Awaitable[Any]:
            return node.call(args.target, n=1)

        if args.rate:
            load = open_loop(call, record, args.rate, stop)
        else:
            load = closed_loop(call, record, args.concurrency, stop)
        async with asyncio.TaskGroup() as group:
            group.create_task(load)
            await asyncio.sleep(args.warmup)
            record.measuring = True
            _loadgen.emit({"measuring": True, "at": time.time()})
            await asyncio.sleep(args.seconds)
            record.measuring = False
            stop.set()
    _loadgen.emit({**record.result(), "signals": log.report(), "pid": os.getpid()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--secret", required=True, help="hex")
    parser.add_argument("--target", default="bench.work")
    load = parser.add_mutually_exclusive_group(required=True)
    load.add_argument("--concurrency", type=int, default=0, help="closed loop: calls in flight")
    load.add_argument("--rate", type=float, default=0.0, help="open loop: calls started per second")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--strategy", default="p2c")
    parser.add_argument("--policy", default=None, help="a resilience Policy as JSON")
    args = parser.parse_args(argv)
    try:
        run_loop(_run(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

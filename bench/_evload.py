"""What every child of the events bench shares: the start signal, the credit pipe, the
producer's two loops and the consumer's record.

A case is one producer process and one consumer process, started by
``bench/events.py``.  Each child sets itself up (node, database, connection),
prints ``{"ready": ...}`` and waits for one line on stdin: the start time
``T0`` in ``time.monotonic_ns`` (CLOCK_MONOTONIC: one clock for every process
of the machine).  Warm-up runs from ``T0`` for ``--warmup`` seconds, the
measured window for ``--seconds`` after it; the producer stops emitting at
the window's end, and both stay up ``--tail`` seconds more (a relay still
publishes, a consumer still handles) before printing their figures.

* ``--mode rate`` (closed loop): at most ``--in-flight`` events emitted and
  not yet handled.  The consumer writes one byte per handled event into a
  pipe the driver made (``--credit-fd``), 16 to a write (or after 1 ms); the
  producer's ``--producers`` tasks each take a byte's credit before they emit.
  The rate is the events handled inside the window per second.
* ``--mode latency`` (open loop): one emit every ``1 / --rate`` seconds, each
  in a task of its own so a slow emit does not delay the next; the producer
  keeps each event's emit time, the consumer its handled time, by sequence
  number, and the driver pairs them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

TOPIC = "bench.item"
CREDIT_BATCH = 16  # credits the consumer sends in one write (see Record.handled)
PAD = "x" * 96  # every event carries this, so its payload is about 110 bytes of msgpack


class Item(msgspec.Struct, array_like=True):
    """The payload of every case, encoded by msgspec: the bare baseline sends the same bytes."""

    n: int
    pad: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", choices=("producer", "consumer"))
    parser.add_argument("--mode", choices=("rate", "latency"), required=True)
    parser.add_argument("--warmup", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--tail", type=float, default=1.0)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s in latency mode")
    parser.add_argument("--credit-fd", type=int, default=-1)


class Plan:
    """The times and the mode of one run, as one child sees them."""

    def __init__(self, args: argparse.Namespace, start_ns: int) -> None:
        self.args = args
        self.mode: str = args.mode
        self.start_ns = start_ns
        self.window_ns = start_ns + int(args.warmup * 1e9)
        self.end_ns = self.window_ns + int(args.seconds * 1e9)
        self.stop_ns = self.end_ns + int(args.tail * 1e9)
        self.cpu: dict[str, float] = {}

    def in_window(self, at_ns: int) -> bool:
        return self.window_ns <= at_ns < self.end_ns

    async def watch_cpu(self) -> None:
        """This process's CPU use inside the window, in CPUs (1.0: one core all the time)."""
        await sleep_until(self.window_ns)
        before = os.times()
        await sleep_until(self.end_ns)
        after = os.times()
        used = after.user - before.user + after.system - before.system
        self.cpu["busy"] = used / self.args.seconds


async def sleep_until(at_ns: int) -> None:
    await asyncio.sleep(max(at_ns - time.monotonic_ns(), 0) / 1e9)


def emit_line(result: dict[str, Any]) -> None:
    """One line of JSON for the driver."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def ready_then_start(args: argparse.Namespace, **facts: Any) -> Plan:
    """Say we are set up, then wait for the driver's start time."""
    emit_line({"ready": True, "pid": os.getpid(), **facts})
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.strip():
        raise SystemExit("the driver went away before the start")
    return Plan(args, int(line))


# -- producer -------------------------------------------------------------------------------

Emit = Callable[[int], Awaitable[int]]
"""Emit event number ``n``; returns its emit time (monotonic ns), as the case defines it."""


class _CreditReader(asyncio.Protocol):
    """Each byte from the consumer is one handled event: one more event may be emitted."""

    def __init__(self, credits: asyncio.Semaphore) -> None:
        self.credits = credits

    def data_received(self, data: bytes) -> None:
        for _ in range(len(data)):
            self.credits.release()


async def produce(plan: Plan, emit: Emit) -> dict[str, Any]:
    """Run the plan's producer loop; the figures for the driver."""
    watcher = asyncio.create_task(plan.watch_cpu())
    if plan.mode == "rate":
        result = await _closed_loop(plan, emit)
    else:
        result = await _open_loop(plan, emit)
    await watcher
    await sleep_until(plan.stop_ns)  # a relay may still be publishing what was emitted
    return {**result, "cpu": plan.cpu["busy"]}


async def _closed_loop(plan: Plan, emit: Emit) -> dict[str, Any]:
    credits = asyncio.Semaphore(plan.args.in_flight)
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(plan.args.credit_fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: _CreditReader(credits), pipe)
    emitted = 0
    await sleep_until(plan.start_ns)

    async def worker() -> None:
        nonlocal emitted
        while (left := plan.end_ns - time.monotonic_ns()) > 0:
            try:
                async with asyncio.timeout(left / 1e9):
                    await credits.acquire()
            except TimeoutError:
                return  # the window is over while waiting: nothing more to emit
            emitted += 1
            await emit(emitted)

    try:
        async with asyncio.TaskGroup() as tasks:
            for _ in range(plan.args.producers):
                tasks.create_task(worker())
    finally:
        transport.close()
    return {"emitted": emitted}


async def _open_loop(plan: Plan, emit: Emit) -> dict[str, Any]:
    interval_ns = 1e9 / plan.args.rate
    emitted: dict[int, int] = {}

    async def one(n: int) -> None:
        emitted[n] = await emit(n)

    async with asyncio.TaskGroup() as tasks:
        n = 0
        while (due := plan.start_ns + int(n * interval_ns)) < plan.end_ns:
            await sleep_until(due)
            tasks.create_task(one(n))
            n += 1
    return {"emitted": len(emitted), "emit_ns": emitted}


# -- consumer -------------------------------------------------------------------------------


class Record:
    """What the consumer handled: a count in the window, handled times, credits back."""

    def __init__(self) -> None:
        self.plan: Plan | None = None
        self.count = 0
        self.outside = 0  # handled before the start or after the window (warm-up, tail)
        self.handled_ns: dict[int, int] = {}
        self._fd = -1
        self._unsent = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, plan: Plan) -> None:
        self.plan = plan
        self._fd = plan.args.credit_fd if plan.mode == "rate" else -1
        self._loop = asyncio.get_running_loop()

    def handled(self, n: int) -> None:
        """Event ``n`` is handled (called at the end of the handler)."""
        now = time.monotonic_ns()
        plan = self.plan
        if plan is None:
            self.outside += 1
            return
        if plan.in_window(now):
            self.count += 1
        else:
            self.outside += 1
        if plan.mode == "latency":
            self.handled_ns.setdefault(n, now)  # a redelivery is not the event's handling
        elif self._fd >= 0:
            # Written 16 at a time, or 1 ms after the first: a write per event would
            # cost the consumer more than some of the cases it measures.
            self._unsent += 1
            if self._unsent >= CREDIT_BATCH:
                self._send_credits()
            elif self._unsent == 1:
                assert self._loop is not None
                self._loop.call_later(0.001, self._send_credits)

    def _send_credits(self) -> None:
        unsent, self._unsent = self._unsent, 0
        if self._fd < 0 or not unsent:
            return
        try:
            os.write(self._fd, b"\0" * unsent)
        except OSError:  # the producer is gone (its window is over): nobody needs credits
            self._fd = -1

    async def until_stop(self) -> dict[str, Any]:
        """Wait out the run; the figures for the driver."""
        assert self.plan is not None
        await self.plan.watch_cpu()
        await sleep_until(self.plan.stop_ns)
        return {
            "handled": self.count,
            "outside": self.outside,
            "handled_ns": self.handled_ns,
            "cpu": self.plan.cpu["busy"],
        }

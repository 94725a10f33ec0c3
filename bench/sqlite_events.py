"""The embedded event log across processes: emit-to-handle latency, throughput, idle cost.

    .venv/bin/python bench/sqlite_events.py              # all three phases
    .venv/bin/python bench/sqlite_events.py --quick      # fewer events

A publisher process and a consumer process (uvloop when installed, as nodes
run) share one SQLite file in a temporary directory:

* latency: the publisher publishes one event every ``--gap`` ms; the consumer
  handles (decodes) and acks each, and records now - the publish time carried
  in the payload (``time.monotonic_ns``: one clock for every process of a
  machine).  Target: p50 <= 5 ms.
* throughput: ``--count`` events published back to back, consumed by
  ``--consumers`` processes of one group; events/s from the first publish to
  the last ack, and the publisher's own rate.
* idle: a subscribed consumer with nothing to do, CPU seconds per second,
  in the first 1.5 s (the 1 ms poll that follows activity) and once settled
  (the 20 ms poll).

Each child prints one JSON line; this driver prints the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import msgspec

from flotilla.events import Delivery, Envelope, Subscription, new_event_id
from flotilla.events.sqlite import SqliteEvents

TARGET_P50_MS = 5.0


def run_loop(main: object) -> None:
    try:
        import uvloop

        uvloop.run(main)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(main)  # type: ignore[arg-type]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def publish(path: str, count: int, gap: float, in_flight: int) -> None:
    backend = SqliteEvents(path)
    await backend.publish(event("warm", 0))  # open the file before the clock starts
    slots = asyncio.Semaphore(in_flight)

    async def one(n: int) -> None:
        async with slots:
            await backend.publish(event("t", n, key=f"k{n % 16}"))

    started = time.monotonic()
    async with asyncio.TaskGroup() as tasks:
        for n in range(count):
            await slots.acquire()  # at most in_flight publishes at once
            slots.release()
            tasks.create_task(one(n))
            await asyncio.sleep(gap)
    elapsed = time.monotonic() - started
    await backend.aclose()
    print(json.dumps({"published": count, "seconds": elapsed}), flush=True)


def event(topic: str, n: int, *, key: str | None = None) -> Envelope:
    payload = msgspec.msgpack.encode({"n": n, "at": time.monotonic_ns()})
    return Envelope(id=new_event_id(), topic=topic, source="bench", instance="p", time=time.time(),
                    payload=payload, key=key)  # fmt: skip


async def consume(path: str, count: int, name: str, idle: float, in_flight: int) -> None:
    backend = SqliteEvents(path)
    subscription = Subscription(topic="t", group="g", instance=name)
    await backend.declare(subscription)
    print("ready", flush=True)
    deliveries = backend.subscribe(subscription)
    if idle:
        waiting = asyncio.ensure_future(anext(deliveries))
        await asyncio.sleep(0.1)
        cpu = cpu_seconds()
        await asyncio.sleep(1.5)  # still within 2 s of the last change: the fast poll
        fast = (cpu_seconds() - cpu) / 1.5
        await asyncio.sleep(1.0)
        cpu = cpu_seconds()
        await asyncio.sleep(idle)
        slow = (cpu_seconds() - cpu) / idle
        print(json.dumps({"fast": fast, "slow": slow}), flush=True)
        waiting.cancel()
        await backend.aclose()
        return
    latencies: list[float] = []
    slots = asyncio.Semaphore(in_flight)  # handlers at once, as flotilla's consumer runs them

    async def handle(delivery: Delivery) -> None:
        body = msgspec.msgpack.decode(delivery.envelope.payload)
        await delivery.ack()
        latencies.append((time.monotonic_ns() - body["at"]) / 1e6)
        slots.release()

    async with asyncio.TaskGroup() as tasks:
        for _ in range(count):
            await slots.acquire()
            tasks.create_task(handle(await anext(deliveries)))
    print(json.dumps({"latencies_ms": latencies, "last": time.monotonic()}), flush=True)
    await backend.aclose()


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)


def phase(path: str, count: int, gap: float, in_flight: int) -> tuple[list[float], float, float]:
    """One publisher, one consumer: (latencies ms, end-to-end events/s, publisher events/s)."""
    reader = spawn("--role", "consume", path, str(count), "c1", str(in_flight))
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "ready"
    started = time.monotonic()
    publisher = spawn("--role", "publish", path, str(count), str(gap), str(in_flight))
    out, _ = publisher.communicate()
    got = json.loads(reader.stdout.readline())
    reader.wait()
    latencies: list[float] = got["latencies_ms"]
    rate = len(latencies) / (got["last"] - started)
    return latencies, rate, count / json.loads(out)["seconds"]


def report(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lat, _, _ = phase(f"{tmp}/events.db", args.latency_count, args.gap / 1000, 1)
    q = statistics.quantiles(lat, n=100)
    p50 = statistics.median(lat)
    verdict = "PASS" if p50 <= TARGET_P50_MS else "MISS"
    target = f"[{verdict}: target p50 <= {TARGET_P50_MS} ms]"
    print(f"latency    ({len(lat)} events, one every {args.gap} ms): p50 {p50:.2f} ms"
          f"  p90 {q[89]:.2f}  p99 {q[98]:.2f}  {target}")  # fmt: skip
    for in_flight in (1, 64):
        with tempfile.TemporaryDirectory() as tmp:
            _, rate, pub_rate = phase(f"{tmp}/events.db", args.count, 0.0, in_flight)
        print(f"throughput ({args.count} events, {in_flight} in flight): {rate:,.0f} events/s"
              f" end to end; the publisher alone {pub_rate:,.0f}/s")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        idle = spawn("--role", "idle", f"{tmp}/events.db", "0", "idle", str(args.idle))
        assert idle.stdout is not None
        idle.stdout.readline()
        cpu = json.loads(idle.stdout.readline())
        idle.wait()
    print(f"idle subscriber: {cpu['fast'] * 100:.2f} % of a CPU just after activity,"
          f" {cpu['slow'] * 100:.2f} % settled")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["publish", "consume", "idle"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gap", type=float, default=2.0, help="ms between latency events")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of the idle phase")
    args = parser.parse_args()
    if args.role == "publish":
        run_loop(publish(args.rest[0], int(args.rest[1]), float(args.rest[2]), int(args.rest[3])))
    elif args.role == "consume":
        run_loop(consume(args.rest[0], int(args.rest[1]), args.rest[2], 0.0, int(args.rest[3])))
    elif args.role == "idle":
        run_loop(consume(args.rest[0], 0, args.rest[2], float(args.rest[3]), 1))
    else:
        args.latency_count = 300 if args.quick else 2000
        args.count = 2000 if args.quick else 20000
        report(args)


if __name__ == "__main__":
    main()

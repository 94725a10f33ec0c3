"""Keyless events through JetStream: flotilla's backend against bare nats-py, on one server.

    .venv/bin/python bench/jetstream_events.py              # 2000 events, 3 runs
    .venv/bin/python bench/jetstream_events.py --events 5000 --runs 5
    FLOTILLA_TEST_NATS_URL=nats://host:4222 .venv/bin/python bench/jetstream_events.py

Each run publishes N events, then consumes and acks them, and times both
phases, in two ways:

* one at a time: each publish waits for its acknowledgement before the next;
  the subscription has ``max_in_flight=1`` (it takes one message per ask);
  the baseline is bare nats-py ``js.publish`` and ``fetch(1)``;
* ``--window W`` (64) at a time: W publishes in flight at once (W tasks);
  the subscription has ``max_in_flight=W`` (a consumer with W handler slots:
  it takes up to W per round trip); the baseline is W concurrent
  ``js.publish`` and ``fetch(W)``.

Each consumer acks each message before taking the next (the bare one acks a
fetched batch one by one).  Streams are made for the run and deleted after.
CPU seconds of this process per event are printed beside the rates (the
server's are not counted).  bench/events.py is the full benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import msgspec
import nats
from nats.js import api

from flotilla.events import Envelope, Subscription, new_event_id
from flotilla.events.jetstream import JetStreamEvents

URL = os.environ.get("FLOTILLA_TEST_NATS_URL") or "nats://127.0.0.1:4222"


def envelope(n: int) -> Envelope:
    return Envelope(id=new_event_id(), topic="bench.created", source="bench", instance="b1",
                    time=time.time(), payload=msgspec.msgpack.encode({"n": n}))  # fmt: skip


async def publish_all(publish: Callable[[int], Awaitable[object]], count: int, window: int) -> None:
    """Publish events 0..count-1 with at most ``window`` publishes in flight."""
    if window == 1:
        for n in range(count):
            await publish(n)
        return
    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            await publish(n)

    async with asyncio.TaskGroup() as tasks:
        for _ in range(window):
            tasks.create_task(worker())


async def flotilla_run(count: int, window: int) -> tuple[float, float]:
    prefix = f"BENCH_{secrets.token_hex(4)}"
    backend = JetStreamEvents(URL, prefix=prefix)
    # (Source without ``max_in_flight`` takes one message per ask whatever the window.)
    room = {"max_in_flight": window} if "max_in_flight" in Subscription.__struct_fields__ else {}
    sub = Subscription(topic="bench.created", group="g", instance="i1", **room)
    try:
        await backend.declare(sub)
        events = [envelope(n) for n in range(count)]
        start = time.perf_counter()
        await publish_all(lambda n: backend.publish(events[n]), count, window)
        published = time.perf_counter()
        got = 0
        async for delivery in backend.subscribe(sub):
            await delivery.ack()
            got += 1
            if got == count:
                break
        return published - start, time.perf_counter() - published
    finally:
        js = (await backend._link.connection()).jetstream()
        for stream in (prefix, f"{prefix}_DLQ"):
            await js.delete_stream(stream)
        await backend.aclose()


async def bare_run(count: int, window: int) -> tuple[float, float]:
    client = await nats.connect(URL)
    js = client.jetstream()
    stream = f"BARE_{secrets.token_hex(4)}"
    try:
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        psub = await js.pull_subscribe(f"{stream}.ev", durable="g", stream=stream,
                                       config=api.ConsumerConfig(max_deliver=-1))  # fmt: skip
        # The same bytes the backend sends: an encoded envelope per event.
        bodies = [msgspec.msgpack.encode(envelope(n)) for n in range(count)]
        start = time.perf_counter()
        await publish_all(lambda n: js.publish(f"{stream}.ev", bodies[n]), count, window)
        published = time.perf_counter()
        got = 0
        while got < count:
            for msg in await psub.fetch(window, timeout=5):
                msgspec.msgpack.decode(msg.data, type=Envelope)
                await msg.ack()
                got += 1
        return published - start, time.perf_counter() - published
    finally:
        await js.delete_stream(stream)
        await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=64, help="publishes in flight, batch")
    args = parser.parse_args()
    w = args.window
    phases: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "flotilla 1": lambda: flotilla_run(args.events, 1),
        "bare 1": lambda: bare_run(args.events, 1),
        f"flotilla {w}": lambda: flotilla_run(args.events, w),
        f"bare {w}": lambda: bare_run(args.events, w),
    }
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in phases}
    for _ in range(args.runs):
        for name, run in phases.items():
            cpu = time.process_time()
            pub, con = await run()
            cpu_us = (time.process_time() - cpu) / args.events * 1e6
            rates[name].append((args.events / pub, args.events / con, cpu_us))
    print(f"{args.events} keyless events, median of {args.runs} runs; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    print(f"{'':18}{'publish/s':>10}{'consume/s':>10}{'both/s':>10}{'CPU µs/ev':>10}")
    medians = {}
    for name, values in rates.items():
        pub = statistics.median(v[0] for v in values)
        con = statistics.median(v[1] for v in values)
        cpu_us = statistics.median(v[2] for v in values)
        both = 1 / (1 / pub + 1 / con)
        medians[name] = (pub, con, both)
        print(f"{name:18}{pub:10.0f}{con:10.0f}{both:10.0f}{cpu_us:10.0f}")
    for window in (1, w):
        ratios = [f / b for f, b in zip(medians[f"flotilla {window}"], medians[f"bare {window}"],
                                        strict=True)]  # fmt: skip
        print(f"flotilla / bare, {window} at a time: " + " ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    asyncio.run(main())

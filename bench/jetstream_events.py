"""Keyless events through JetStream: flotilla's backend against bare nats-py, on one server.

    .venv/bin/python bench/jetstream_events.py              # 2000 events, 3 runs
    .venv/bin/python bench/jetstream_events.py --events 5000 --runs 5
    FLOTILLA_TEST_NATS_URL=nats://host:4222 .venv/bin/python bench/jetstream_events.py

Each run publishes N events one at a time, waiting for each acknowledgement,
then consumes and acks them one at a time, and times both phases.  The
baseline does the same with bare nats-py: ``js.publish`` and a pull consumer
asked for one message per fetch (``fetch(1)``), the same one-at-a-time contract
the backend keeps (no prefetch).  For scale, a batched baseline
(``fetch(100)``, which the backend does not do) is printed too.  Streams are
made for the run and deleted after.  A rough figure for one machine; the lead's
bench/events.py will be the full benchmark.
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


async def flotilla_run(count: int) -> tuple[float, float]:
    prefix = f"BENCH_{secrets.token_hex(4)}"
    backend = JetStreamEvents(URL, prefix=prefix)
    sub = Subscription(topic="bench.created", group="g", instance="i1")
    try:
        await backend.declare(sub)
        events = [envelope(n) for n in range(count)]
        start = time.perf_counter()
        for event in events:
            await backend.publish(event)
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


async def bare_run(count: int, batch: int) -> tuple[float, float]:
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
        for body in bodies:
            await js.publish(f"{stream}.ev", body)
        published = time.perf_counter()
        got = 0
        while got < count:
            for msg in await psub.fetch(batch, timeout=5):
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
    args = parser.parse_args()
    phases: dict[str, Callable[[], Awaitable[tuple[float, float]]]] = {
        "flotilla": lambda: flotilla_run(args.events),
        "bare fetch(1)": lambda: bare_run(args.events, 1),
        "bare fetch(100)": lambda: bare_run(args.events, 100),
    }
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in phases}
    for _ in range(args.runs):
        for name, run in phases.items():
            pub, con = await run()
            rates[name].append((args.events / pub, args.events / con))
    print(f"{args.events} keyless events, median of {args.runs} runs, events/s")
    print(f"{'':18}{'publish':>10}{'consume':>10}{'both':>10}")
    medians = {}
    for name, values in rates.items():
        pub = statistics.median(v[0] for v in values)
        con = statistics.median(v[1] for v in values)
        both = 1 / (1 / pub + 1 / con)
        medians[name] = (pub, con, both)
        print(f"{name:18}{pub:10.0f}{con:10.0f}{both:10.0f}")
    base = medians["bare fetch(1)"]
    ratios = [f / b for f, b in zip(medians["flotilla"], base, strict=True)]
    print("flotilla / bare fetch(1): " + " ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    asyncio.run(main())

"""What idle subscriptions cost a process of the embedded event log, per event handled.

    .venv/bin/python bench/idle_subscriptions.py            # 0 and 12 idle subscriptions
    PYTHONPATH=<tree>/src .venv/bin/python bench/idle_subscriptions.py   # another source tree

One process (uvloop), one SQLite log: a subscription that handles (acks)
every event of its topic, published at ``--rate`` a second for ``--seconds``,
and N subscriptions of other topics that never get one.  Every commit to the
file wakes every subscription of the machine (SQLite cannot say which topic
changed), so the idle ones cost whatever their wake-ups cost: the figure is
the process's CPU time (both threads) per event published and handled.  The
shop has 13 subscriptions in four processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import uvloop

from flotilla.events import Delivery, Envelope, Subscription, new_event_id
from flotilla.events.sqlite import SqliteEvents


async def ack_all(deliveries: AsyncIterator[Delivery]) -> None:
    async for delivery in deliveries:
        await delivery.ack()


def event() -> Envelope:
    return Envelope(
        id=new_event_id(), topic="busy", source="bench", instance="i", time=time.time(), payload=b""
    )


async def cpu_per_event(idle: int, rate: float, seconds: float) -> float:
    """CPU µs per event handled with ``idle`` idle subscriptions beside the busy one."""
    with tempfile.TemporaryDirectory() as folder:
        log = SqliteEvents(Path(folder) / "events.db")
        topics = ["busy", *(f"idle{n}" for n in range(idle))]
        consumers = []
        for topic in topics:
            subscription = Subscription(topic=topic, group="g", instance="i")
            await log.declare(subscription)
            consumers.append(asyncio.create_task(ack_all(log.subscribe(subscription))))
        await asyncio.sleep(0.5)  # every subscription claimed once and waits
        count = int(rate * seconds)
        cpu, start = time.process_time(), time.perf_counter()
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
            await log.publish(event())
        await asyncio.sleep(0.2)  # the last ones handled
        spent = time.process_time() - cpu
        for consumer in consumers:
            consumer.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        await log.aclose()
    return spent / count * 1e6


async def main(options: argparse.Namespace) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"{options.rate:g} events/s for {options.seconds:g} s; load average {load}")
    for idle in options.idle:
        figure = await cpu_per_event(idle, options.rate, options.seconds)
        print(f"  {idle:3d} idle subscriptions: {figure:7.0f} µs CPU per event handled")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, nargs="+", default=[0, 12])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    uvloop.run(main(parser.parse_args()))

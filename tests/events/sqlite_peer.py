"""A process on the other side of the SQLite event log, for tests/events/test_sqlite.py.

    python sqlite_peer.py publish PATH TOPIC COUNT
        publish COUNT events (keys k0..k4), printing "sent ID" for each, then "published"
    python sqlite_peer.py consume PATH TOPIC GROUP INSTANCE ACK_WAIT ack|hold
        declare the group, print "ready", then "got ID ATTEMPT" per delivery;
        ack each, or hold it unacked forever

Each line is flushed at once: the test reads them as they come.
"""

from __future__ import annotations

import asyncio
import sys
import time

from flotilla.events import Envelope, Subscription, new_event_id
from flotilla.events.sqlite import SqliteEvents


def say(line: str) -> None:
    print(line, flush=True)


async def publish(path: str, topic: str, count: int) -> None:
    backend = SqliteEvents(path)
    try:
        for n in range(count):
            envelope = Envelope(
                id=new_event_id(), topic=topic, source="peer", instance="peer",
                time=time.time(), payload=str(n).encode(), key=f"k{n % 5}",
            )  # fmt: skip
            await backend.publish(envelope)
            say(f"sent {envelope.id}")
        say("published")
    finally:
        await backend.aclose()


async def consume(path: str, topic: str, group: str, instance: str, ack_wait: float,
                  mode: str) -> None:  # fmt: skip
    backend = SqliteEvents(path)
    subscription = Subscription(topic=topic, group=group, instance=instance, ack_wait=ack_wait)
    held = []
    try:
        await backend.declare(subscription)
        say("ready")  # the group exists: nothing published from now on is missed
        deliveries = backend.subscribe(subscription)
        while True:
            delivery = await anext(deliveries)
            say(f"got {delivery.envelope.id} {delivery.envelope.attempt}")
            if mode == "ack":
                await delivery.ack()
            else:
                held.append(delivery)
    finally:
        await backend.aclose()


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "publish":
        asyncio.run(publish(args[0], args[1], int(args[2])))
    else:
        asyncio.run(consume(args[0], args[1], args[2], args[3], float(args[4]), args[5]))


if __name__ == "__main__":
    main()

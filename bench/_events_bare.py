"""The events bench's bare baseline: nats-py JetStream, publish with ack, pull-consume with ack.

    python bench/_events_bare.py consumer --nats URL --stream S --subject X --mode rate ...
    python bench/_events_bare.py producer --nats URL --stream S --subject X --mode rate ...

What one would write by hand with nats-py, and no weaker than that:

* the consumer creates the stream (file storage, one replica, as a durable
  log is) and a durable pull consumer with explicit acks, then loops
  ``fetch(batch=64)``: decodes each message into the same ``Item`` the
  flotilla cases carry (same bytes: msgspec msgpack), records it and acks it
  (``msg.ack()``: one publish to the server, not awaited for a reply);
* the producer's tasks ``await js.publish(subject, payload)``: each returns
  once the server has stored the message (its PubAck).  The emit time is just
  before the call, the handled time just after the ack.

The same process layout and loops (``_evload``) as the flotilla cases; the
consumer deletes the stream when it is done.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import _evload
import msgspec
import nats
import nats.errors
from _evload import PAD, Item
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from flotilla.runtime.serve import run_loop

FETCH = 64


async def _consume(args: argparse.Namespace) -> None:
    decode = msgspec.msgpack.Decoder(Item).decode
    client = await nats.connect(args.nats)
    js = client.jetstream()
    await js.add_stream(
        StreamConfig(
            name=args.stream, subjects=[args.subject], storage=StorageType.FILE, num_replicas=1
        )
    )
    try:
        config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30.0)
        pull = await js.pull_subscribe(args.subject, durable="bench", stream=args.stream,
                                       config=config)  # fmt: skip
        record = _evload.Record()

        async def loop() -> None:
            while True:
                try:
                    messages = await pull.fetch(FETCH, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    item = decode(message.data)
                    await message.ack()
                    record.handled(item.n)

        plan = await _evload.ready_then_start(args)
        record.start(plan)
        fetching = asyncio.create_task(loop())
        try:
            result = await record.until_stop()
        finally:
            fetching.cancel()
            await asyncio.wait([fetching])  # its cancellation stays in it; ours propagates
    finally:
        await js.delete_stream(args.stream)
        await client.close()
    _evload.emit_line(result)


async def _produce(args: argparse.Namespace) -> None:
    encode = msgspec.msgpack.Encoder().encode
    client = await nats.connect(args.nats)
    js = client.jetstream()
    subject = args.subject

    async def emit(n: int) -> int:
        at = time.monotonic_ns()
        await js.publish(subject, encode(Item(n=n, pad=PAD)))
        return at

    try:
        plan = await _evload.ready_then_start(args)
        result = await _evload.produce(plan, emit)
    finally:
        await client.close()
    _evload.emit_line(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _evload.add_arguments(parser)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--subject", required=True)
    args = parser.parse_args()
    try:
        run_loop(_consume(args) if args.role == "consumer" else _produce(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

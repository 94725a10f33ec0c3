"""The flotilla side of the events bench: a producer node and a consumer node.

    python bench/_events_flotilla.py consumer --events URL --data DIR --emit outbox --handle inbox \
        --mode rate ...     (and the same with ``producer``)

``--emit outbox``: each of the producer's transactions inserts a row and
``tx.emit``s the event (the transactional outbox; the node's relay publishes
it); the emit time is the end of the transaction block (committed).
``--emit plain``: ``node.emit`` publishes at once (what ``ctx.emit`` does);
the emit time is just before the call.

``--handle inbox``: the consumer's handler inserts a row in
``self.db.transaction(ctx)`` (the idempotent inbox records the event in the
same transaction).  ``--handle plain``: the handler touches no database.

Either way the handled time is the end of the handler.  Service databases are
SQLite files in ``--data`` (one per service, as ``flotilla serve`` places
them).  See ``_evload`` for the start signal and the two loops.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _evload
from _evload import PAD, TOPIC, Item
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flotilla import Context, Database, Node, NodeConfig, Service, on_event
from flotilla.runtime.serve import run_loop


class Base(DeclarativeBase):
    pass


class Order(Base):
    """What a producer's transaction writes beside its event."""

    __tablename__ = "bench_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]
    pad: Mapped[str] = mapped_column(String(128))


class Handled(Base):
    """What a consumer's handler writes."""

    __tablename__ = "bench_handled"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


class Producer(Service, name="bench_producer"):
    db = Database(metadata=Base.metadata)


def consumer_service(group: str, record: _evload.Record, transactional: bool) -> Service:
    """A consumer of ``TOPIC`` in ``group`` (fresh per run: a broker's log outlives a run)."""
    if transactional:

        class Inbox(Service, name="bench_consumer"):
            db = Database(metadata=Base.metadata)

            @on_event(TOPIC, group=group)
            async def handle(self, item: Item, ctx: Context) -> None:
                async with self.db.transaction(ctx) as tx:
                    tx.session.add(Handled(n=item.n))
                record.handled(item.n)

        return Inbox()

    class Plain(Service, name="bench_consumer"):
        @on_event(TOPIC, group=group)
        async def handle(self, item: Item) -> None:
            record.handled(item.n)

    return Plain()


def _config(args: argparse.Namespace) -> NodeConfig:
    return NodeConfig(events=args.events, data_dir=str(args.data))


async def _consume(args: argparse.Namespace) -> None:
    record = _evload.Record()
    service = consumer_service(args.group, record, args.handle == "inbox")
    async with Node(service, config=_config(args)):
        plan = await _evload.ready_then_start(args)
        record.start(plan)
        result = await record.until_stop()
    _evload.emit_line(result)


async def _produce(args: argparse.Namespace) -> None:
    producer = Producer()
    async with Node(producer, config=_config(args)) as node:
        if args.emit == "outbox":
            db = producer.db

            async def emit(n: int) -> int:
                async with db.transaction() as tx:
                    tx.session.add(Order(n=n, pad=PAD))
                    tx.emit(TOPIC, Item(n=n, pad=PAD))
                return time.monotonic_ns()

        else:

            async def emit(n: int) -> int:
                at = time.monotonic_ns()
                await node.emit(TOPIC, Item(n=n, pad=PAD))
                return at

        plan = await _evload.ready_then_start(args)
        result = await _evload.produce(plan, emit)
    _evload.emit_line(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _evload.add_arguments(parser)
    parser.add_argument("--events", required=True, help="the event backend URL")
    parser.add_argument("--data", type=Path, required=True, help="the data directory")
    parser.add_argument("--emit", choices=("outbox", "plain"), required=True)
    parser.add_argument("--handle", choices=("inbox", "plain"), required=True)
    parser.add_argument("--group", default="bench")
    args = parser.parse_args()
    try:
        run_loop(_consume(args) if args.role == "consumer" else _produce(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

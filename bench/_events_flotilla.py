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
them), or with ``--database URL --schema S`` a PostgreSQL schema per process
(the driver creates and drops them).  See ``_evload`` for the start signal
and the two loops.
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


def _database(args: argparse.Namespace) -> Database:
    """The service's database: SQLite in the data directory, or a PostgreSQL schema."""
    if args.schema is None:
        return Database(metadata=Base.metadata)
    options = {"connect_args": {"server_settings": {"search_path": args.schema}}}
    return Database(metadata=Base.metadata, engine_options=options)


def producer_service(args: argparse.Namespace) -> Service:
    class Producer(Service, name="bench_producer"):
        db = _database(args)

    return Producer()


def consumer_service(args: argparse.Namespace, record: _evload.Record) -> Service:
    """A consumer of ``TOPIC`` in ``args.group`` (fresh per run: a broker's log outlives it)."""
    if args.handle == "inbox":

        class Inbox(Service, name="bench_consumer"):
            db = _database(args)

            @on_event(TOPIC, group=args.group)
            async def handle(self, item: Item, ctx: Context) -> None:
                async with self.db.transaction(ctx) as tx:
                    tx.session.add(Handled(n=item.n))
                record.handled(item.n)

        return Inbox()

    class Plain(Service, name="bench_consumer"):
        @on_event(TOPIC, group=args.group)
        async def handle(self, item: Item) -> None:
            record.handled(item.n)

    return Plain()


def _config(args: argparse.Namespace) -> NodeConfig:
    return NodeConfig(events=args.events, data_dir=str(args.data), database=args.database)


async def _consume(args: argparse.Namespace) -> None:
    record = _evload.Record()
    service = consumer_service(args, record)
    async with Node(service, config=_config(args)):
        plan = await _evload.ready_then_start(args)
        record.start(plan)
        result = await record.until_stop()
    _evload.emit_line(result)


async def _produce(args: argparse.Namespace) -> None:
    producer = producer_service(args)
    async with Node(producer, config=_config(args)) as node:
        if args.emit == "outbox":
            db: Database = producer.db  # type: ignore[attr-defined]

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
    parser.add_argument("--database", default=None, help="PostgreSQL URL (default: SQLite)")
    parser.add_argument("--schema", default=None, help="the PostgreSQL schema of this process")
    args = parser.parse_args()
    try:
        run_loop(_consume(args) if args.role == "consumer" else _produce(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

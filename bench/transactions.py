"""What one service transaction costs on SQLite: CPU time and trips to the driver's thread.

    .venv/bin/python bench/transactions.py

Three shapes, each the body of a real case in ``bench/events.py``: *empty*
(``async with db.transaction(): pass``), *emitting* (an ORM row and
``tx.emit``: the outbox) and *handling* (the inbox's record of a delivered
event and an ORM row); and the relay's: *claim_idle* (a claim that finds
nothing) and *emit+relay* (``tx.emit`` alone, the relay's claim of the row
and its next claim, which marks it sent).  One SQLite file, one process (uvloop), no relay and no
broker.  Process time (the loop's thread and aiosqlite's together, not wall
time) keeps the figure steady on a busy machine: 9 rounds of 300
transactions per shape, interleaved, the best round printed.  A *trip* is one
call run on aiosqlite's thread (counted by wrapping its private
``Connection._execute``; "n/a" if that is gone): each is a hand-off between
two threads, and on a busy machine a wait for a CPU.

To compare with another source tree, run it with ``PYTHONPATH=<tree>/src``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite.core
from _events_flotilla import Base, Handled, Order
from _evload import PAD, TOPIC, Item

import flotilla
from flotilla.data import Database
from flotilla.data.outbox import OutboxStore
from flotilla.events import Envelope, new_event_id
from flotilla.runtime.serve import run_loop

ROUNDS = 9
PER_ROUND = 300

Shape = Callable[[Database, int], Awaitable[None]]


async def empty(db: Database, n: int) -> None:
    async with db.transaction():
        pass


async def emitting(db: Database, n: int) -> None:
    async with db.transaction() as tx:
        tx.session.add(Order(n=n, pad=PAD))
        tx.emit(TOPIC, Item(n=n, pad=PAD))


async def handling(db: Database, n: int) -> None:
    event = Envelope(id=new_event_id(), topic=TOPIC, source="bench", instance="i",
                     time=time.time(), payload=b"")  # fmt: skip
    async with db.transaction(event=event, group="bench") as tx:
        tx.session.add(Handled(n=n))


class Trips:
    """Counts the calls aiosqlite runs on its thread."""

    def __init__(self) -> None:
        self.count = 0
        self.works = hasattr(aiosqlite.core.Connection, "_execute")
        if self.works:
            original = aiosqlite.core.Connection._execute
            trips = self

            async def counted(connection: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
                trips.count += 1
                return await original(connection, fn, *args, **kwargs)

            aiosqlite.core.Connection._execute = counted  # type: ignore[method-assign]


def relay_shapes() -> dict[str, Shape]:
    """The relay's side of one event: its claim of the row, and the next claim (which
    marks it sent and finds nothing); and an idle relay's claim alone."""
    sent: list[int] = []

    async def claim_idle(db: Database, n: int) -> None:
        await OutboxStore(db).claim("bench", limit=64, lease=30.0)

    async def relayed(db: Database, n: int) -> None:
        store = OutboxStore(db)
        async with db.transaction() as tx:
            tx.emit(TOPIC, Item(n=n, pad=PAD))
        sent[:] = [claimed.row for claimed in await store.claim("bench", limit=64, lease=30.0)]
        await store.claim("bench", limit=64, lease=30.0, sent=sent)

    return {"claim_idle": claim_idle, "emit+relay": relayed}


async def main() -> None:
    trips = Trips()
    shapes: dict[str, Shape] = {"empty": empty, "emitting": emitting, "handling": handling}
    shapes.update(relay_shapes())
    best = {name: float("inf") for name in shapes}
    per_tx: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite://{Path(folder) / 'bench.db'}", source="bench",
                      metadata=Base.metadata)  # fmt: skip
        await db.open()
        try:
            for name, shape in shapes.items():  # warm-up, and the trips of one transaction
                for n in range(50):
                    await shape(db, n)
                before = trips.count
                await shape(db, 50)
                per_tx[name] = str(trips.count - before) if trips.works else "n/a"
            for _ in range(ROUNDS):
                for name, shape in shapes.items():
                    started = time.process_time()
                    for n in range(PER_ROUND):
                        await shape(db, n)
                    spent = (time.process_time() - started) / PER_ROUND * 1e6
                    best[name] = min(best[name], spent)
        finally:
            await db.aclose()
    print(f"flotilla from {Path(flotilla.__file__).parent}; Python {sys.version.split()[0]}")
    print(f"  {'transaction':<12}{'CPU µs':>9}{'trips':>7}")
    for name in shapes:
        print(f"  {name:<12}{best[name]:>9.0f}{per_tx[name]:>7}")


if __name__ == "__main__":
    run_loop(main())

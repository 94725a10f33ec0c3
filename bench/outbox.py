"""Outbox benchmark: how soon the relay publishes a committed event, and how many per second.

    .venv/bin/python bench/outbox.py                  # SQLite file, and PostgreSQL if it answers
    .venv/bin/python bench/outbox.py --events 2000    # more events for the rate

Latency: one transaction at a time emits one event; the time from the end of
the ``async with db.transaction()`` block (committed) to the backend's
``publish`` call, the relay having been woken by the commit.  Rate: many
transactions of one event each, back to back, relay running; events
published per second until the last one.  The backend only records (no
broker): this measures the outbox and the relay, not a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from typing import Any

from flotilla.data import Database, OutboxRelay
from flotilla.events.envelope import Envelope
from flotilla.runtime.serve import run_loop

POSTGRES = os.environ.get("FLOTILLA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1/test")


class Recorder:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.arrived = asyncio.Event()

    async def publish(self, envelope: Envelope) -> None:
        self.at[envelope.id] = time.perf_counter()
        self.arrived.set()

    async def wait(self, event_id: str) -> None:
        while event_id not in self.at:
            await self.arrived.wait()
            self.arrived.clear()


async def measure(url: str, latency_events: int, rate_events: int) -> dict[str, float]:
    options = {}
    if url.startswith("postgresql"):  # a schema of its own, dropped after
        schema = f"flotilla_bench_{secrets.token_hex(4)}"
        await _postgres(url, f"CREATE SCHEMA {schema}")
        options = {"connect_args": {"server_settings": {"search_path": schema}}}
    try:
        return await _measure(url, options, latency_events, rate_events)
    finally:
        if options:
            await _postgres(url, f"DROP SCHEMA {schema} CASCADE")


async def _postgres(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _measure(
    url: str, options: dict[str, Any], latency_events: int, rate_events: int
) -> dict[str, float]:
    database = Database(url, source="bench", engine_options=options)
    await database.open()
    recorder = Recorder()
    relay = OutboxRelay(database, recorder)
    await relay.start()
    try:
        delays = []
        for n in range(latency_events):
            async with database.transaction() as tx:
                event = tx.emit("bench.latency", {"n": n}, key=str(n % 8))
            committed = time.perf_counter()
            await recorder.wait(event.id)
            delays.append((recorder.at[event.id] - committed) * 1000)
        start = time.perf_counter()
        for n in range(rate_events):
            async with database.transaction() as tx:
                last = tx.emit("bench.rate", {"n": n}, key=str(n % 8))
        await recorder.wait(last.id)
        elapsed = recorder.at[last.id] - start
    finally:
        await relay.stop()
        await database.aclose()
    delays.sort()
    return {
        "p50_ms": statistics.median(delays),
        "p99_ms": delays[int(len(delays) * 0.99) - 1],
        "events_per_s": rate_events / elapsed,
    }


async def main(latency_events: int, rate_events: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        targets = {"sqlite": f"sqlite://{folder}/bench.db", "postgresql": POSTGRES}
        for name, url in targets.items():
            try:
                figures = await measure(url, latency_events, rate_events)
            except Exception as exc:  # a server that is not there: say so, go on
                print(f"{name:<11} skipped: {exc}")
                continue
            print(
                f"{name:<11} commit-to-publish p50 {figures['p50_ms']:.2f} ms,"
                f" p99 {figures['p99_ms']:.2f} ms;"
                f" {figures['events_per_s']:,.0f} events/s (one event per transaction)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-events", type=int, default=300)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    run_loop(main(args.latency_events, args.events))

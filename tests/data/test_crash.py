"""A crash between commit and publish loses nothing: a real process, killed with SIGKILL.

The child commits events with ``tx.emit`` and runs a relay whose broker never
answers, so at the kill some rows are claimed by a relay that is now dead and
the rest were never claimed.  A relay in this process then publishes every
row, exactly once (the dead relay's claims run out after their lease).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import msgspec
from sqlalchemy import func, select
from tests.data.conftest import Target
from tests.data.recording import RecordingBackend

from flotilla.data import OutboxRelay, RelayPolicy
from flotilla.data.schema import outbox
from flotilla.testing import wait_for

EVENTS = 30
LEASE = 2.0

CHILD = """
import asyncio, json, sys

from flotilla.data import Database, OutboxRelay, RelayPolicy

url, options = sys.argv[1], json.loads(sys.argv[2])
events, lease = int(sys.argv[3]), float(sys.argv[4])


class Hangs:
    def __init__(self):
        self.entered = asyncio.Event()

    async def publish(self, envelope):
        self.entered.set()
        await asyncio.Event().wait()  # a broker that never answers


async def main():
    database = Database(url, engine_options=options, source="orders")
    await database.open()
    backend = Hangs()
    relay = OutboxRelay(database, backend, policy=RelayPolicy(batch=5, lease=lease))
    await relay.start()
    for n in range(0, events, 3):
        async with database.transaction() as tx:
            for m in range(n, min(n + 3, events)):
                tx.emit("order.created", {"n": m}, key=f"k{m % 4}")
    await backend.entered.wait()  # the relay holds a claim, mid-publish
    print("committed", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
"""


async def test_rows_committed_by_a_killed_process_are_all_published_once(
    target: Target, tmp_path: Path
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [target.url, json.dumps(target.engine_options), str(EVENTS), str(LEASE)]
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), *args, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
        assert line.strip() == b"committed"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        await child.wait()

    backend = RecordingBackend()
    async with target.opened() as database:
        async with database.connect() as conn:
            held = await conn.scalar(
                select(func.count())
                .select_from(outbox)
                .where(outbox.c.claimed_until > time.time(), outbox.c.sent_at.is_(None))
            )
        assert 1 <= held < EVENTS  # the dead relay held some rows; others were never claimed
        relay = OutboxRelay(database, backend, policy=RelayPolicy(poll=0.05))
        await relay.start()
        try:
            await wait_for(lambda: len(backend.published) >= EVENTS, timeout=15)
            await asyncio.sleep(0.1)  # a duplicate would land now
            unsent = await relay.store.unsent()
        finally:
            await relay.stop()
    assert len(backend.ids) == len(set(backend.ids)) == EVENTS
    numbers = [msgspec.msgpack.decode(e.payload)["n"] for e in backend.published]
    assert sorted(numbers) == list(range(EVENTS))
    for key in range(4):  # each key's events in the order they were emitted
        of_key = [n for n in numbers if n % 4 == key]
        assert of_key == sorted(of_key)
    assert unsent == 0

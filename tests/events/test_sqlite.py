"""What only the SQLite event log must get right: processes sharing it, crashes, its file, pruning.

The behaviour every backend shares is in tests/conformance/test_events.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flotilla import Node, NodeConfig, Service, Timings, on_event
from flotilla.errors import Unavailable
from flotilla.events import Delivery, Envelope, Subscription, new_event_id
from flotilla.events.sqlite import SqliteEvents
from flotilla.registry import MemoryRegistry
from flotilla.testing import FakeClock, wait_for

WAIT = 5.0
PEER = str(Path(__file__).with_name("sqlite_peer.py"))


def envelope(topic: str = "t", n: int = 0, *, key: str | None = None) -> Envelope:
    return Envelope(
        id=new_event_id(),
        topic=topic,
        source="s",
        instance="s-1",
        time=time.time(),
        payload=msgspec.msgpack.encode(n),
        key=key,
    )


def sub(
    group: str = "g", *, instance: str = "i1", ack_wait: float = 30.0, **kw: Any
) -> Subscription:
    return Subscription(topic="t", group=group, instance=instance, ack_wait=ack_wait, **kw)


async def next_of(deliveries: AsyncIterator[Delivery]) -> Delivery:
    async with asyncio.timeout(WAIT):
        return await anext(deliveries)


def stored_seqs(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [seq for (seq,) in conn.execute("SELECT seq FROM events ORDER BY seq")]


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock(start=time.time())


@pytest.fixture
async def log(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteEvents]:
    backend = SqliteEvents(tmp_path / "events.db", clock=clock, retention=10.0, prune_every=1.0)
    yield backend
    await backend.aclose()


class Peer:
    """A process on the other side of the file (tests/events/sqlite_peer.py)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, *args: str) -> Peer:
        process = await asyncio.create_subprocess_exec(
            sys.executable, PEER, *args, stdout=asyncio.subprocess.PIPE
        )
        return cls(process)

    async def line(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(WAIT):
            raw = await self.process.stdout.readline()
        assert raw, f"peer {self.process.pid} ended (exit {await self.process.wait()})"
        return raw.decode().strip()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        await peer.stop()


async def test_a_publisher_process_and_two_consumer_processes_share_the_file(
    tmp_path: Path, peers: list[Peer]
) -> None:
    path = str(tmp_path / "events.db")
    consumers = [await Peer.start("consume", path, "t", "g", f"c{n}", "30", "ack") for n in (1, 2)]
    peers.extend(consumers)
    for consumer in consumers:
        assert await consumer.line() == "ready"
    publisher = await Peer.start("publish", path, "t", "40")
    peers.append(publisher)
    sent = set()
    while (line := await publisher.line()) != "published":
        sent.add(line.split()[1])
    got: list[str] = []
    readers = {asyncio.ensure_future(c.line()): c for c in consumers}
    while len(got) < len(sent):  # each line read within WAIT, or the test fails
        done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            consumer = readers.pop(task)
            _, event_id, attempt = task.result().split()
            got.append(event_id)
            assert attempt == "1"
            readers[asyncio.ensure_future(consumer.line())] = consumer
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    assert sorted(got) == sorted(sent)  # every event once, to one consumer of the group


async def test_a_sigkilled_consumer_delivery_comes_back_after_ack_wait(
    tmp_path: Path, peers: list[Peer]
) -> None:
    path = tmp_path / "events.db"
    doomed = await Peer.start("consume", str(path), "t", "g", "doomed", "0.5", "hold")
    peers.append(doomed)
    assert await doomed.line() == "ready"
    backend = SqliteEvents(path)
    try:
        sent = envelope()
        await backend.publish(sent)
        assert await doomed.line() == f"got {sent.id} 1"
        os.kill(doomed.process.pid, signal.SIGKILL)
        assert await doomed.process.wait() == -signal.SIGKILL
        survivor = backend.subscribe(sub(instance="survivor", ack_wait=0.5))
        again = await next_of(survivor)
        assert (again.envelope.id, again.envelope.attempt) == (sent.id, 2)
        await again.ack()
        await survivor.aclose()  # type: ignore[attr-defined]
    finally:
        await backend.aclose()


async def test_ack_wait_runs_on_the_clock(log: SqliteEvents, clock: FakeClock) -> None:
    await log.declare(sub(ack_wait=5.0))
    await log.publish(envelope())
    deliveries = log.subscribe(sub(ack_wait=5.0))
    first = await next_of(deliveries)
    pending = asyncio.ensure_future(anext(deliveries))
    await clock.advance(4.99)
    done, _ = await asyncio.wait({pending}, timeout=0.2)  # a wake-up runs a claim: none due
    assert not done
    await first.in_progress()  # due again at 4.99 + 5 = 9.99
    await clock.advance(4.9)  # 9.89; the first ack_wait (5) has passed
    done, _ = await asyncio.wait({pending}, timeout=0.2)
    assert not done
    await clock.advance(0.2)  # 10.09: past the renewed ack_wait
    again = await asyncio.wait_for(pending, WAIT)
    assert (again.envelope.id, again.envelope.attempt) == (first.envelope.id, 2)
    await again.ack()
    await first.ack()  # late, from the earlier attempt: the event was handled; no error
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_pruning_keeps_what_a_group_or_a_dead_letter_still_needs(
    log: SqliteEvents, clock: FakeClock
) -> None:
    a, b = log.subscribe(sub("a")), log.subscribe(sub("b"))
    await log.declare(sub("a"))
    await log.declare(sub("b"))
    for n in range(3):
        await log.publish(envelope(n=n))
    e0, e1, e2 = stored_seqs(log.path)
    for _ in range(2):
        await (await next_of(a)).ack()
    await (await next_of(a)).dead_letter("boom")  # e2
    await (await next_of(b)).ack()  # e0; b still holds e1 and e2 to come
    b1 = await next_of(b)

    await clock.advance(11.0)
    await log.publish(envelope(n=3))  # a publish prunes, at most every prune_every
    (e3,) = set(stored_seqs(log.path)) - {e0, e1, e2}
    assert stored_seqs(log.path) == [e1, e2, e3]  # e0: every group is done with it

    await b1.ack()
    for _ in range(2):
        await (await next_of(b)).ack()  # e2, e3
    await (await next_of(a)).ack()  # e3
    await clock.advance(11.0)
    await log.publish(envelope(n=4))
    (e4,) = set(stored_seqs(log.path)) - {e1, e2, e3}
    assert stored_seqs(log.path) == [e2, e4]  # e2 stays with its dead letter; e4 is young

    assert await log.replay() == 1
    for _ in range(2):  # e4, then the replayed e2 at the end of the queue
        await (await next_of(a)).ack()
    await (await next_of(b)).ack()  # e4
    await clock.advance(11.0)
    await log.publish(envelope(n=5))
    assert len(stored_seqs(log.path)) == 1
    for iterator in (a, b):
        await iterator.aclose()  # type: ignore[attr-defined]


async def test_an_unseen_broadcast_group_is_dropped_and_stops_holding_events(
    tmp_path: Path, clock: FakeClock
) -> None:
    log = SqliteEvents(tmp_path / "e.db", clock=clock, retention=0.0, broadcast_expiry=60.0)
    try:
        await log.declare(sub("cache", instance="gone", broadcast=True))
        await log.publish(envelope())
        await clock.advance(30.0)
        await log.publish(envelope())
        assert len(stored_seqs(log.path)) == 2  # the instance may still come for them
        await clock.advance(31.0)
        await log.publish(envelope())
        assert len(stored_seqs(log.path)) == 1  # only the newest, which no group took in
        with sqlite3.connect(log.path) as conn:
            assert conn.execute("SELECT count(*) FROM groups").fetchone() == (0,)
    finally:
        await log.aclose()


async def test_a_removed_file_is_started_afresh_and_a_stale_delivery_leaves_it_alone(
    log: SqliteEvents,
) -> None:
    await log.declare(sub())
    await log.publish(envelope(n=0))
    deliveries = log.subscribe(sub())
    stale = await next_of(deliveries)
    for suffix in ("", "-wal", "-shm"):
        os.unlink(f"{log.path}{suffix}")
    await log.declare(sub())  # reopens: a new, empty file, where the group starts again
    fresh = envelope(n=1)
    await log.publish(fresh)
    got = await next_of(deliveries)  # the same group id, seq and attempt as the stale one
    assert got.envelope.id == fresh.id
    await stale.dead_letter("late")  # of the old file: must not touch the new file's row
    assert await log.dead_letters() == []
    await got.ack()
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_a_removed_file_heals_for_a_running_consumer(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    consumer, publisher = SqliteEvents(path), SqliteEvents(path)
    try:
        await consumer.declare(sub())
        deliveries = consumer.subscribe(sub())
        pending = asyncio.ensure_future(anext(deliveries))
        done, _ = await asyncio.wait({pending}, timeout=0.1)  # idle, waiting for a change
        assert not done
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{path}{suffix}")
        # The consumer makes its group in the new file when it next looks;
        # publish until it has: no event published after that is missed.
        async with asyncio.timeout(WAIT):
            while not pending.done():
                await publisher.publish(envelope())
                await asyncio.wait({pending}, timeout=0.05)
        await pending.result().ack()
        await deliveries.aclose()  # type: ignore[attr-defined]
    finally:
        await consumer.aclose()
        await publisher.aclose()


async def test_the_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        log = SqliteEvents(tmp_path / "new" / "events.db")
        await log.publish(envelope())
        await log.aclose()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "events.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700


async def test_garbage_and_foreign_files_are_unavailable_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database at all" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    for path, reason in [(garbage, "not a database"), (foreign, "not an event log")]:
        log = SqliteEvents(path)
        with pytest.raises(Unavailable, match=f"{path}.*{reason}"):
            await log.publish(envelope())
        await log.aclose()
    with sqlite3.connect(foreign) as conn:  # refused, not dropped
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("orders",)]


async def test_a_stored_event_that_does_not_decode_is_dead_lettered_and_the_rest_flow(
    log: SqliteEvents,
) -> None:
    await log.declare(sub())
    await log.publish(envelope(n=0))  # makes the file
    with sqlite3.connect(log.path) as conn:
        conn.execute(
            "INSERT INTO events (id, topic, key, envelope, time) VALUES ('bad', 't', NULL, ?, 0)",
            (b"\xc1garbage",),
        )
    good = envelope(n=2)
    await log.publish(good)
    deliveries = log.subscribe(sub())
    got = [await next_of(deliveries) for _ in range(2)]
    assert [d.envelope.payload for d in got] == [msgspec.msgpack.encode(0), good.payload]
    [dead] = await log.dead_letters()
    assert (dead.envelope.id, dead.envelope.payload) == ("bad", b"\xc1garbage")
    assert "does not decode" in dead.error
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_a_republished_event_is_stored_once(log: SqliteEvents) -> None:
    sent = envelope()
    await log.publish(sent)
    await log.publish(sent)  # an outbox relay that crashed before marking it sent
    assert len(stored_seqs(log.path)) == 1


async def test_broadcast_dead_letters_name_the_instance(log: SqliteEvents) -> None:
    subscription = sub("cache", instance="i7", broadcast=True)
    await log.declare(subscription)
    await log.publish(envelope())
    deliveries = log.subscribe(subscription)
    await (await next_of(deliveries)).dead_letter("boom")
    [dead] = await log.dead_letters(topic="t")
    assert dead.group == "cache@i7"
    await deliveries.aclose()  # type: ignore[attr-defined]


class Placed(msgspec.Struct):
    n: int


class Billing(Service, name="billing"):
    def __init__(self) -> None:
        self.seen: list[int] = []

    @on_event("order.placed")
    async def charge(self, order: Placed) -> None:
        self.seen.append(order.n)


class Cache(Service, name="cache"):
    def __init__(self) -> None:
        self.evicted: list[int] = []

    @on_event("order.placed", broadcast=True)
    async def evict(self, order: Placed) -> None:
        self.evicted.append(order.n)


async def test_nodes_each_with_its_own_connection_share_groups_and_broadcast(
    tmp_path: Path,
) -> None:
    config = NodeConfig(timings=Timings(ttl=1.0, heartbeat=0.2, grace=0.0, drain=1.0))
    registry = MemoryRegistry()
    # One backend per node, as separate processes would each open the file.
    logs = [SqliteEvents(tmp_path / "events.db") for _ in range(5)]
    billings, caches = [Billing(), Billing()], [Cache(), Cache()]
    services: list[Service] = [*billings, *caches]
    nodes = [
        Node(s, config=config, registry=registry, events=e)
        for s, e in zip(services, logs[:4], strict=True)
    ]
    try:
        for node in nodes:
            await node.start()  # consumers declared: nothing emitted from now on is missed
        async with Node(config=config, registry=registry, events=logs[-1]) as client:
            for n in range(20):
                await client.emit("order.placed", Placed(n), key=f"order-{n % 3}")
            await wait_for(lambda: sum(len(b.seen) for b in billings) == 20, timeout=WAIT)
            await wait_for(lambda: all(len(c.evicted) == 20 for c in caches), timeout=WAIT)
        assert sorted(n for b in billings for n in b.seen) == list(range(20))  # each once
        for cache in caches:
            assert sorted(cache.evicted) == list(range(20))
    finally:
        for node in nodes:
            await node.aclose()
        for log in logs:
            await log.aclose()
        await registry.aclose()


async def test_a_tail_goes_on_in_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    watcher, publisher = SqliteEvents(path), SqliteEvents(path)
    tail = watcher.tail("t")
    try:
        first = asyncio.ensure_future(anext(tail))
        async with asyncio.timeout(WAIT):  # the tail starts at the end when it first looks
            while not first.done():
                await publisher.publish(envelope(n=0))
                await asyncio.wait({first}, timeout=0.02)
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{path}{suffix}")
        fresh = envelope(n=1)
        await publisher.publish(fresh)  # seq 1 of the new file: below the old file's seqs
        async with asyncio.timeout(WAIT):
            while (await anext(tail)).id != fresh.id:
                pass
    finally:
        await tail.aclose()  # type: ignore[attr-defined]
        await watcher.aclose()
        await publisher.aclose()


async def test_a_consumer_waits_out_a_broken_file_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.db"
    consumer, publisher = SqliteEvents(path), SqliteEvents(path)
    try:
        await consumer.declare(sub())
        deliveries = consumer.subscribe(sub())
        pending = asyncio.ensure_future(anext(deliveries))
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{path}{suffix}")
        path.write_bytes(b"garbage" * 1000)
        await wait_for(lambda: "cannot be used" in caplog.text, timeout=WAIT)
        assert not pending.done()  # waiting, not failed
        path.unlink()  # the next try makes a new file
        async with asyncio.timeout(WAIT):
            while not pending.done():
                await publisher.publish(envelope())
                await asyncio.wait({pending}, timeout=0.05)
        await pending.result().ack()
        await deliveries.aclose()  # type: ignore[attr-defined]
    finally:
        await consumer.aclose()
        await publisher.aclose()


async def test_a_cancelled_aclose_is_cancelled_not_swallowed(log: SqliteEvents) -> None:
    await log.declare(sub())
    await log.publish(envelope())
    deliveries = log.subscribe(sub())
    await next_of(deliveries)  # the subscription started the log's watch task
    closing = asyncio.create_task(log.aclose())
    await asyncio.sleep(0)  # aclose now waits for the watch task to end
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await deliveries.aclose()


def in_flight(path: Path) -> list[tuple[int, int]]:
    """(seq, attempt) of the rows claimed and not ended."""
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT seq, attempt FROM deliveries WHERE owner IS NOT NULL ORDER BY seq"
        ).fetchall()


async def test_one_claim_takes_the_free_slots_and_one_of_each_key(log: SqliteEvents) -> None:
    deliveries = log.subscribe(sub(max_in_flight=3))
    await log.declare(sub())
    for n, key in enumerate(["a", "a", "b", None, None]):
        await log.publish(envelope(n=n, key=key))
    first = await next_of(deliveries)
    # One go: the first of "a" (the second waits for it), "b", the first keyless; no more.
    assert [seq for seq, _ in in_flight(log.path)] == [1, 3, 4]
    taken = [first, await next_of(deliveries), await next_of(deliveries)]
    assert [msgspec.msgpack.decode(d.envelope.payload) for d in taken] == [0, 2, 3]
    await taken[0].ack()
    await taken[1].ack()
    # One still held: the next claim is of two, the next of "a" (first in line) and the last.
    fourth = await next_of(deliveries)
    assert msgspec.msgpack.decode(fourth.envelope.payload) == 1
    assert [seq for seq, _ in in_flight(log.path)] == [2, 4, 5]
    await deliveries.aclose()  # type: ignore[attr-defined]


async def test_rows_in_hand_when_the_iterator_closes_go_back_to_the_group(
    log: SqliteEvents,
) -> None:
    greedy = log.subscribe(sub(instance="greedy", max_in_flight=4))
    await log.declare(sub())
    for n in range(3):
        await log.publish(envelope(n=n))
    taken = await next_of(greedy)
    assert len(in_flight(log.path)) == 3
    await greedy.aclose()  # type: ignore[attr-defined]
    assert in_flight(log.path) == [(1, 1)]  # the one handed out stays with its consumer
    other = log.subscribe(sub(instance="other"))
    rest = [await next_of(other), await next_of(other)]
    # Given back as never claimed: attempt 1 again, at once (not after ack_wait).
    assert sorted(msgspec.msgpack.decode(d.envelope.payload) for d in rest) == [1, 2]
    assert [d.envelope.attempt for d in rest] == [1, 1]
    assert taken.envelope.attempt == 1
    await other.aclose()  # type: ignore[attr-defined]

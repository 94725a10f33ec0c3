"""The outbox relay: publishes what commits stored, promptly, in order per key, once per row."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from sqlalchemy import select
from tests.data.conftest import Target
from tests.data.recording import RecordingBackend

from flotilla.data import Backoff, Database, OutboxRelay, RelayPolicy
from flotilla.data.schema import outbox
from flotilla.events import Envelope
from flotilla.testing import wait_for

FAST = RelayPolicy(poll=0.05, backoff=Backoff(base=0.01, max=0.05))


@asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[OutboxRelay]:
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


async def emit(database: Database, *keys: str | None) -> list[str]:
    async with database.transaction() as tx:
        return [tx.emit("t.x", {"n": n}, key=key).id for n, key in enumerate(keys)]


def by_key(published: list[Envelope], key: str) -> list[str]:
    return [envelope.id for envelope in published if envelope.key == key]


async def test_a_local_commit_wakes_the_relay_at_once(target: Target) -> None:
    backend = RecordingBackend()
    slow_poll = RelayPolicy(poll=30.0)  # only the wake-up can explain a prompt publish
    async with target.opened() as database:
        relay = OutboxRelay(database, backend, policy=slow_poll)
        async with running(relay):
            await asyncio.sleep(0.05)  # the relay is idle, waiting
            ids = await emit(database, "a", "b")
            await wait_for(lambda: len(backend.published) == 2, timeout=2.0)
            assert sorted(backend.ids) == sorted(ids)
            async with asyncio.timeout(2.0):
                while await relay.store.unsent():  # noqa: ASYNC110 - marked in the table
                    await asyncio.sleep(0.01)
        async with database.connect() as conn:
            sent = (await conn.execute(select(outbox.c.sent_at))).scalars().all()
    assert len(sent) == 2
    assert all(at is not None for at in sent)


async def test_rows_committed_by_another_process_are_found_by_polling(target: Target) -> None:
    backend = RecordingBackend()
    async with (
        target.opened() as database,
        target.opened() as elsewhere,  # another engine: its commits do not wake this relay
        running(OutboxRelay(database, backend, policy=FAST)),
    ):
        ids = await emit(elsewhere, None)
        await wait_for(lambda: backend.ids == ids, timeout=5.0)


async def test_a_failed_publish_holds_back_its_key_only(target: Target) -> None:
    failures = {"left": 3}

    def fail_a2(envelope: Envelope) -> bool:
        if envelope.id == ids[1] and failures["left"] > 0:
            failures["left"] -= 1
            return True
        return False

    backend = RecordingBackend(fails=fail_a2)
    async with target.opened() as database:
        ids = await emit(database, "a", "a", "a", "b", "b")
        async with running(OutboxRelay(database, backend, policy=FAST)):
            await wait_for(lambda: len(backend.published) == 5, timeout=5.0)
    assert failures["left"] == 0
    assert by_key(backend.published, "a") == ids[:3]  # a3 never overtook a2
    assert by_key(backend.published, "b") == ids[3:]
    assert backend.ids.index(ids[4]) < backend.ids.index(ids[1])  # b did not wait for a
    assert len(set(backend.ids)) == 5


async def test_a_broker_that_is_down_costs_no_event_and_the_relay_catches_up(
    target: Target,
) -> None:
    backend = RecordingBackend()
    backend.down = True
    async with target.opened() as database, running(OutboxRelay(database, backend, policy=FAST)):
        ids = []
        for n in range(10):
            ids += await emit(database, f"k{n % 3}")  # every commit succeeds
        await wait_for(lambda: backend.attempts >= 5)  # tried, failed, backing off
        assert backend.published == []
        backend.down = False
        await wait_for(lambda: len(backend.published) == 10, timeout=5.0)
    assert sorted(backend.ids) == sorted(ids)
    for key in ("k0", "k1", "k2"):
        assert by_key(backend.published, key) == [
            i for n, i in enumerate(ids) if n % 3 == int(key[1])
        ]


async def test_backing_off_slows_the_attempts_down(target: Target) -> None:
    backend = RecordingBackend()
    backend.down = True
    policy = RelayPolicy(poll=0.01, backoff=Backoff(base=0.1, max=0.2))
    async with target.opened() as database, running(OutboxRelay(database, backend, policy=policy)):
        await emit(database, None)
        await wait_for(lambda: backend.attempts >= 4, timeout=10.0)
    # Without backoff a 0.01 s poll would try again at once; with it, the n-th
    # retry waits at least 0.1, 0.2, 0.2 s (a busy machine only adds to that).
    # The slack: asyncio may wake a sleeper up to its clock's resolution early.
    gaps = [later - earlier for earlier, later in itertools.pairwise(backend.attempted_at[:4])]
    assert all(
        gap >= policy.backoff.delay(failures) - 0.005 for failures, gap in enumerate(gaps, 1)
    ), gaps


async def test_stopping_gives_back_the_rows_it_held(target: Target) -> None:
    backend = RecordingBackend()
    backend.hold = asyncio.Event()  # a broker that never answers
    async with target.opened() as database:
        await emit(database, "k")
        relay = OutboxRelay(database, backend, policy=FAST)
        await relay.start()
        await backend.entered.wait()
        await relay.stop()
        async with database.connect() as conn:
            claimed_by = await conn.scalar(select(outbox.c.claimed_by))
        assert claimed_by is None
        backend.hold.set()
        async with running(OutboxRelay(database, backend, policy=FAST)):
            await wait_for(lambda: len(backend.published) == 1, timeout=2.0)


async def test_two_relays_on_one_outbox_never_publish_a_row_twice(target: Target) -> None:
    backend = RecordingBackend()
    policy = RelayPolicy(poll=0.01, batch=8, in_flight=4)
    emitted: dict[int, list[str]] = {0: [], 3: []}  # per producer, in the order committed

    async def producer(database: Database, offset: int) -> None:
        for n in range(40):
            emitted[offset] += await emit(database, f"k{(n + offset) % 7}", None)

    async with target.opened() as first, target.opened() as second:
        relays = [OutboxRelay(db, backend, policy=policy) for db in (first, second)]
        async with running(relays[0]), running(relays[1]):
            await asyncio.gather(producer(first, 0), producer(second, 3))
            await wait_for(lambda: len(backend.published) >= 160, timeout=20.0)
            await asyncio.sleep(0.1)  # a duplicate would land now
    assert len(backend.ids) == len(set(backend.ids)) == 160
    assert set(backend.ids) == set(emitted[0] + emitted[3])
    # Events of a key that one producer emitted one after another are published
    # in that order (two producers' concurrent commits have no order between them).
    for ids in emitted.values():
        mine = set(ids)
        for key in {envelope.key for envelope in backend.published if envelope.key}:
            published = [i for i in by_key(backend.published, key) if i in mine]
            assert published == [i for i in ids if i in set(published)], key


async def test_a_publish_that_hangs_is_given_up_before_the_claim_runs_out(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flotilla.data")
    backend = RecordingBackend()
    backend.hold = asyncio.Event()  # a broker that never answers
    policy = RelayPolicy(poll=0.05, lease=0.5, backoff=Backoff(base=0.05, max=0.05))
    async with target.opened() as database, running(OutboxRelay(database, backend, policy=policy)):
        await emit(database, "k")
        # Without the bound the first publish would hang on, holding the row forever.
        await wait_for(lambda: backend.attempts >= 2, timeout=5)  # given up, then tried again
        backend.hold.set()
        await wait_for(lambda: len(backend.published) >= 1, timeout=5)
    assert set(backend.ids) == {backend.published[0].id}
    # The log says what happened, not just "TimeoutError()".
    assert any(
        "had not finished when its claim was about to run out (lease 0.5 s)" in record.message
        for record in caplog.records
    )

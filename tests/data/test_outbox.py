"""The outbox's statements: claims in id order, held for a lease, one claimer per key at a time."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select, update
from tests.data.conftest import Target

from flotilla.data import outbox as outbox_module
from flotilla.data.database import Database
from flotilla.data.outbox import OutboxStore
from flotilla.data.schema import inbox, outbox
from flotilla.testing import FakeClock


async def emit(database: Database, *keys: str | None) -> list[str]:
    async with database.transaction() as tx:
        return [tx.emit("t.x", {"n": n}, key=key).id for n, key in enumerate(keys)]


async def test_a_claim_takes_unsent_rows_in_id_order_up_to_the_limit(target: Target) -> None:
    async with target.opened() as database:
        ids = await emit(database, "a", None, "b", "a")
        store = OutboxStore(database)
        first = await store.claim("r1", limit=3, lease=10)
        rest = await store.claim("r1", limit=10, lease=10)
    assert [claimed.envelope.id for claimed in first] == ids[:3]
    assert [claimed.envelope.id for claimed in rest] == ids[3:]
    assert [claimed.envelope.key for claimed in first] == ["a", None, "b"]


async def test_a_claimed_row_is_not_claimed_again_until_its_lease_runs_out(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lease is wall-clock time in the table, read by the store from its
    # module's ``time``: a fake clock there makes both halves exact, where a
    # real short lease can run out on a busy machine before the second claim.
    clock = FakeClock(start=time.time())
    monkeypatch.setattr(outbox_module, "time", clock)
    async with target.opened() as database:
        await emit(database, None)
        store = OutboxStore(database)
        assert len(await store.claim("r1", limit=10, lease=5)) == 1
        await clock.advance(4.9)
        assert await store.claim("r2", limit=10, lease=10) == []
        await clock.advance(0.2)
        again = await store.claim("r2", limit=10, lease=10)
    assert len(again) == 1


async def test_rows_of_a_key_held_by_another_claimer_wait_for_it(target: Target) -> None:
    async with target.opened() as database:
        await emit(database, "k", "other")
        store = OutboxStore(database)
        held = await store.claim("r1", limit=1, lease=10)  # row 1, key k
        await emit(database, "k", None)
        taken = await store.claim("r2", limit=10, lease=10)
        assert [c.envelope.key for c in taken] == ["other", None]  # not the second "k"
        await store.mark_sent("r1", [held[0].row])
        after = await store.claim("r2", limit=10, lease=10)
    assert [c.envelope.key for c in after] == ["k"]


async def test_mark_sent_and_release_touch_only_the_claimers_rows(target: Target) -> None:
    async with target.opened() as database:
        await emit(database, None, None)
        store = OutboxStore(database)
        one, two = await store.claim("r1", limit=10, lease=10)
        await store.mark_sent("intruder", [one.row])  # not its claim: nothing happens
        assert await store.unsent() == 2
        await store.mark_sent("r1", [one.row])
        await store.release("r1", [two.row])
        assert await store.unsent() == 1
        again = await store.claim("r2", limit=10, lease=10)  # released: free at once
    assert [claimed.row for claimed in again] == [two.row]


async def test_prune_deletes_old_sent_rows_and_old_inbox_rows_only(target: Target) -> None:
    async with target.opened() as database:
        await emit(database, None, None)
        async with database.transaction(event=None) as tx:
            tx.emit("t.y", {})
        store = OutboxStore(database)
        claims = await store.claim("r1", limit=2, lease=10)
        await store.mark_sent("r1", [claim.row for claim in claims])
        async with database.connect() as conn:
            await conn.execute(update(outbox).where(outbox.c.id == claims[0].row).values(sent_at=5))
            await conn.execute(
                inbox.insert(),
                [
                    {"group": "g", "event_id": "old", "handled_at": 5.0},
                    {"group": "g", "event_id": "new", "handled_at": 500.0},
                ],
            )
        assert await store.prune(sent_before=100, handled_before=100) == (1, 1)
        async with database.connect() as conn:
            left = await conn.scalar(select(func.count()).select_from(outbox))
            kept = await conn.scalar(select(inbox.c.event_id))
    assert left == 2  # the recently sent row and the unsent one
    assert kept == "new"

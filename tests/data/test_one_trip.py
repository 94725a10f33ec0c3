"""Flotilla's own inserts: one row straight to the SQLite driver, the same rows and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from tests.data.conftest import Target

from flotilla.data.one_trip import insert_rows
from flotilla.data.schema import inbox, outbox


def outbox_row(event_id: str, key: str | None = "k") -> dict[str, object]:
    return {
        **{"event_id": event_id, "topic": "order.created", "key": key, "source": "orders"},
        **{"instance": "orders-1", "time": 1.5, "headers": b"\x80", "payload": b"\x91\x01"},
    }


async def test_rows_are_stored_as_given_one_or_many(target: Target) -> None:
    async with target.opened() as database:
        async with database.connect() as conn:
            await insert_rows(conn, outbox, [outbox_row("e1", key=None)])
            await insert_rows(conn, outbox, [outbox_row("e2"), outbox_row("e3")])
            await insert_rows(conn, inbox, [{"group": "g", "event_id": "e1", "handled_at": 2.0}])
        async with database.connect() as conn:
            stored = (await conn.execute(select(outbox).order_by(outbox.c.id))).all()
            handled = (await conn.execute(select(inbox))).all()
    assert [row._mapping["event_id"] for row in stored] == ["e1", "e2", "e3"]
    first = dict(stored[0]._mapping)
    assert first == {**outbox_row("e1", key=None), "id": first["id"], "claimed_by": None,
                     "claimed_until": None, "sent_at": None}  # fmt: skip
    assert [tuple(row) for row in handled] == [("g", "e1", 2.0)]


async def test_a_duplicate_row_is_sqlalchemys_integrity_error(target: Target) -> None:
    row = {"group": "g", "event_id": "e1", "handled_at": 2.0}
    async with target.opened() as database:
        async with database.connect() as conn:
            await insert_rows(conn, inbox, [row])
        with pytest.raises(IntegrityError):
            async with database.connect() as conn:
                await insert_rows(conn, inbox, [row])


async def test_on_sqlite_one_row_bypasses_sqlalchemys_execute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three trips to the driver's thread through SQLAlchemy, one straight to it.
    executed: list[object] = []
    original = AsyncConnection.execute

    async def recording(self: AsyncConnection, statement: object, *args: object) -> object:
        executed.append(statement)
        return await original(self, statement, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(AsyncConnection, "execute", recording)
    target = Target(f"sqlite://{tmp_path}/orders.db", {})
    async with target.opened() as database, database.connect() as conn:
        await insert_rows(conn, outbox, [outbox_row("e1")])
        assert executed == []
        await insert_rows(conn, outbox, [outbox_row("e2"), outbox_row("e3")])
        assert len(executed) == 1  # several rows: SQLAlchemy's executemany

"""The producer of the eventful system: each recorded entry is a row and an event, together.

``ledger.record`` writes one ``entries`` row per amount and emits
``ledger.recorded`` through the outbox in the same transaction, so an entry is
never published without its row, nor stored without its event.
"""

from __future__ import annotations

import msgspec
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flotilla import Context, Database, Service, rpc


class Base(DeclarativeBase):
    pass


class Entry(Base):
    __tablename__ = "entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    amount: Mapped[int]


class EntryRecorded(msgspec.Struct):
    entry_id: int
    amount: int


class Ledger(Service, name="ledger"):
    db = Database(metadata=Base.metadata)

    @rpc
    async def record(self, ctx: Context, amounts: list[int], key: str | None = None) -> list[int]:
        """One transaction per amount (each its own commit); the entries' ids."""
        ids = []
        for amount in amounts:
            async with self.db.transaction(ctx) as tx:
                entry = Entry(amount=amount)
                tx.session.add(entry)
                await tx.session.flush()  # the id is known from here on
                tx.emit("ledger.recorded", EntryRecorded(entry.id, amount), key=key)
            ids.append(entry.id)
        return ids

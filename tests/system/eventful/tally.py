"""The consumer of the eventful system: every handling leaves a row in an append-only table.

``effects`` has no unique constraint: an event whose effect happened twice
shows as two rows, which is what the crash tests count.  Each row names the
consumer group (``ctx.group``), the event and the process that handled it.

Three handlers take ``ledger.recorded``: ``count`` (the service's own group,
``tally``), ``audit`` (group ``audit``) and ``refresh`` (broadcast: every
instance); ``judge`` takes ``tally.verdict`` and raises when told to.

The test controls ``count`` through files in the directory named by
``TALLY_GATE``: if ``hold`` is there when a handling begins, the first
handler to rename it to ``held.<pid>`` keeps its transaction open (its effect
written, not committed) until the process is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import msgspec
from ledger import EntryRecorded
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flotilla import Context, Database, Service, on_event


class Base(DeclarativeBase):
    pass


class Effect(Base):
    __tablename__ = "effects"
    id: Mapped[int] = mapped_column(primary_key=True)
    group: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[str] = mapped_column(String(32))
    entry_id: Mapped[int]
    pid: Mapped[int]


class Verdict(msgspec.Struct):
    fail: bool


class Tally(Service, name="tally"):
    db = Database(metadata=Base.metadata)

    @on_event("ledger.recorded")
    async def count(self, entry: EntryRecorded, ctx: Context) -> None:
        async with self.db.transaction(ctx) as tx:
            tx.session.add(self._effect(ctx, entry.entry_id))
            await tx.session.flush()  # written (and the write lock taken), not committed
            await _hold_if_told()

    @on_event("ledger.recorded", group="audit")
    async def audit(self, entry: EntryRecorded, ctx: Context) -> None:
        async with self.db.transaction(ctx) as tx:
            tx.session.add(self._effect(ctx, entry.entry_id))

    @on_event("ledger.recorded", broadcast=True)
    async def refresh(self, entry: EntryRecorded, ctx: Context) -> None:
        async with self.db.transaction(ctx) as tx:
            tx.session.add(self._effect(ctx, entry.entry_id))

    @on_event("tally.verdict", group="judge")
    async def judge(self, verdict: Verdict, ctx: Context) -> None:
        if verdict.fail:
            raise RuntimeError("the verdict says fail")
        async with self.db.transaction(ctx) as tx:
            tx.session.add(self._effect(ctx, 0))

    @staticmethod
    def _effect(ctx: Context, entry_id: int) -> Effect:
        assert ctx.event is not None
        assert ctx.group is not None
        return Effect(group=ctx.group, event_id=ctx.event.id, entry_id=entry_id, pid=os.getpid())


async def _hold_if_told() -> None:
    """Block forever if this handling took the test's ``hold`` file (see the docstring)."""
    gate = os.environ.get("TALLY_GATE")
    if not gate:
        return
    with contextlib.suppress(FileNotFoundError):  # absent, or another handling took it
        os.rename(Path(gate, "hold"), Path(gate, f"held.{os.getpid()}"))
        await asyncio.Event().wait()  # until the test kills this process

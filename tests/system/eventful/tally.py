"""The consumer of the eventful system: every handling leaves a row in an append-only table.

``effects`` has no unique constraint: an event whose effect happened twice
shows as two rows, which is what the crash tests count.  Each row names the
consumer group (``ctx.group``), the event and the process that handled it.

Three handlers take ``ledger.recorded``: ``count`` (the service's own group,
``tally``), ``audit`` (group ``audit``) and ``refresh`` (broadcast: every
instance); ``judge`` takes ``tally.verdict`` and raises when told to.

The test controls ``count`` through files in the directory named by
``TALLY_GATE``: the first handling to find ``hold-open`` there renames it to
``held.<pid>`` (holding the event's id) and hangs with its transaction open,
its effect written but not committed; with ``hold-committed`` it hangs after
the commit, before the handler returns (the event is not acked).  Either
until the test kills the process.  A delivery of an event ``count`` already
handled (the inbox raised :class:`AlreadyHandled`) leaves
``already.<event id>.<pid>`` there.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
from ledger import EntryRecorded
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flotilla import AlreadyHandled, Context, Database, Service, on_event


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
        try:
            async with self.db.transaction(ctx) as tx:
                tx.session.add(self._effect(ctx, entry.entry_id))
                await tx.session.flush()  # written (and the write lock taken), not committed
                await _hold_if_told(ctx, "open")
        except AlreadyHandled:
            _note_already_handled(ctx)
            raise  # the consumer takes it as done
        await _hold_if_told(ctx, "committed")

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


def _note_already_handled(ctx: Context) -> None:
    gate = os.environ.get("TALLY_GATE")
    if gate and ctx.event is not None:
        Path(gate, f"already.{ctx.event.id}.{os.getpid()}").touch()


async def _hold_if_told(ctx: Context, stage: str) -> None:
    """Hang if this handling took the test's ``hold-<stage>`` file (see the docstring)."""
    gate = os.environ.get("TALLY_GATE")
    if not gate:
        return
    held = Path(gate, f"held.{os.getpid()}")
    try:  # atomic: one handling of all the replicas' takes it
        os.rename(Path(gate, f"hold-{stage}"), held)
    except FileNotFoundError:  # not asked for, or another handling took it
        return
    assert ctx.event is not None
    await asyncio.to_thread(held.write_text, ctx.event.id)
    await asyncio.Event().wait()  # until the test kills this process

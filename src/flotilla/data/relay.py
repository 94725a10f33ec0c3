"""The outbox relay: a node part that publishes what transactions stored in the outbox.

::

    start -> wait until the database is ready -> loop:
      PUMP:   claim a batch (data/outbox.py), marking the previous batch's rows sent in
              the same transaction -> publish it
              rows were claimed   -> PUMP again at once (which marks them sent)
              none                -> IDLE
              a publish failed,
              or a database error -> mark what was published, release the rest -> BACKOFF
      IDLE:    until a local commit stored events (woken at once) or ``poll`` seconds pass
               (rows of other processes, claims of dead relays running out) -> PUMP
      BACKOFF: ``backoff.delay(failures in a row)`` seconds, capped; not cut short by
               commits (a broker that is down is not hammered) -> PUMP
    stop -> cancel; published rows are marked sent, the others released (best
            effort; otherwise their claim runs out after ``lease``)

Rows are published in id order; rows of different keys concurrently (up to
``in_flight``), rows of one key one after another, and a failed row stops the
rest of its key in the batch, so events of a key reach the backend in the
order they were emitted.  A publish is given up when the claim is about to
run out (a broker that hangs must not make two relays publish one row at
once).  A row is marked sent after the backend confirmed it:
a crash in between publishes it again (at-least-once; consumers' inboxes make
it harmless).  Sent rows are kept ``keep_sent`` seconds, then pruned, as are
inbox rows older than ``keep_handled``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Sequence

import msgspec

from flotilla.aio import cancel_and_wait
from flotilla.data.database import Database
from flotilla.data.outbox import Claimed, OutboxStore
from flotilla.data.policy import RelayPolicy
from flotilla.events.backend import Publisher

__all__ = ["BatchOutcome", "OutboxRelay"]

log = logging.getLogger("flotilla.data")

# Give up a batch this long before its claim runs out: a publish begun just
# before the end must not overlap another relay's publish of the same row.
_LEASE_MARGIN = 0.25


class BatchOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one pump did."""

    claimed: int
    published: int
    error: str | None = None
    """The first publish error of the batch, if any."""


class OutboxRelay:
    """Publishes ``database``'s outbox through ``backend`` (see the module docstring)."""

    name = "relay"

    def __init__(
        self, database: Database, backend: Publisher, *, policy: RelayPolicy | None = None
    ) -> None:
        self.database = database
        self.backend = backend
        self.policy = policy or RelayPolicy()
        self.store = OutboxStore(database)
        self.claimer = f"{database.source or 'relay'}-{os.getpid()}-{secrets.token_hex(4)}"
        """This relay's name in the ``claimed_by`` column."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unlisten = database.on_commit(self._wake.set)
        self._holding: set[int] = set()  # rows claimed and neither published nor released
        self._unmarked: list[int] = []  # rows published, to be marked sent by the next claim
        self._failure: str | None = None
        self._pruned_at = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start publishing in a task of the relay's own."""
        if self._task is not None:
            raise RuntimeError("a relay starts once")
        self._task = asyncio.create_task(
            self._run(), name=f"outbox relay {self.claimer} of {self.database.where}"
        )

    async def stop(self) -> None:
        """Stop the loop; claims of rows not published are given back.  Idempotent."""
        self._unlisten()
        self._unlisten = _nothing
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task, log)

    def wake(self) -> None:
        """Look at the outbox now (a commit of this process calls it through ``on_commit``)."""
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        await self.database.wait_ready()
        failures = 0
        while True:
            try:
                outcome = await self.pump()
                error = outcome.error
            except Exception as exc:  # the database; CancelledError is not an Exception
                outcome, error = None, f"outbox of {self.database.where}: {exc}"
            if error is not None:
                failures += 1
                self._report(error)
                await asyncio.sleep(self.policy.backoff.delay(failures))
                continue
            if failures:
                failures = 0
                self._report(None)
            assert outcome is not None
            if outcome.claimed == 0:  # (a batch is followed by a claim that marks it sent)
                await self._prune_now_and_then()
                await self._idle()

    async def _idle(self) -> None:
        try:
            async with asyncio.timeout(self.policy.poll):
                await self._wake.wait()
        except TimeoutError:
            pass
        # Cleared before the claim: a commit from now on wakes the next idle.
        self._wake.clear()

    def _report(self, error: str | None) -> None:
        if error is None:
            log.warning("the outbox relay of %s publishes again", self.database.where)
        elif error != self._failure:  # once per distinct failure, not once per attempt
            log.warning("the outbox relay of %s cannot publish (backing off): %s",
                        self.database.where, error)  # fmt: skip
        self._failure = error

    # -- one batch ------------------------------------------------------------------------

    async def pump(self) -> BatchOutcome:
        """Claim one batch (marking the previous one sent), publish it; what happened."""
        self._wake.clear()
        try:
            batch = await self.store.claim(
                self.claimer, limit=self.policy.batch, lease=self.policy.lease, sent=self._unmarked
            )
            self._unmarked = []
            if not batch:
                return BatchOutcome(claimed=0, published=0)
            self._holding.update(claimed.row for claimed in batch)
            deadline = time.time() + self.policy.lease - _LEASE_MARGIN
            sent, error = await self._publish(batch, deadline)
            self._holding.difference_update(sent)
            if error is None:
                self._unmarked = sent  # marked by the next claim, in its transaction
            else:  # settled now: a backoff follows, and other relays may take these keys
                await self.store.settle(self.claimer, sent=sent, release=sorted(self._holding))
                self._holding.clear()
        except asyncio.CancelledError:
            await self._settle_on_the_way_out()
            raise
        return BatchOutcome(claimed=len(batch), published=len(sent), error=error)

    async def _publish(
        self, batch: Sequence[Claimed], deadline: float
    ) -> tuple[list[int], str | None]:
        """Publish ``batch`` (keys concurrently, each in order); the rows sent, the first error."""
        chains: dict[str, list[Claimed]] = {}
        for claimed in batch:  # a row without a key is a chain of its own: no order to keep
            chains.setdefault(claimed.envelope.key or f"\0{claimed.row}", []).append(claimed)
        slots = asyncio.Semaphore(self.policy.in_flight)
        loop = asyncio.get_running_loop()
        sent: list[int] = []
        errors: list[str] = []

        async def run(chain: list[Claimed]) -> None:
            for claimed in chain:
                if time.time() >= deadline:
                    errors.append("the claim ran out before the batch was published")
                    return
                # Bounded by the claim: a publish still hanging when the claim
                # runs out could overlap another relay's publish of the row.
                bound = asyncio.timeout_at(loop.time() + deadline - time.time())
                try:
                    async with slots, bound:
                        await self.backend.publish(claimed.envelope)
                except Exception as exc:
                    errors.append(self._publish_failed(claimed, exc, cut=bound.expired()))
                    return  # the rest of this key waits for this row
                sent.append(claimed.row)

        async with asyncio.TaskGroup() as group:
            for chain in chains.values():
                group.create_task(run(chain))
        return sent, (errors[0] if errors else None)

    def _publish_failed(self, claimed: Claimed, exc: Exception, *, cut: bool) -> str:
        """What went wrong with one publish, for the log (``cut``: stopped by the claim's end)."""
        # No event id: the relay logs each distinct failure once, not once per event.
        what = f"publishing {claimed.envelope.topic}"
        if cut:
            return (
                f"{what} had not finished when its claim was about to run out"
                f" (lease {self.policy.lease:g} s): given up, so that no other relay"
                " publishes it at the same time; it is published again later"
            )
        return f"{what} failed: {exc!r}"

    async def _settle_on_the_way_out(self) -> None:
        """Record what a batch cut short by a stop published and give back the rest, so
        another relay need not wait for the claim to run out; bounded, and shielded
        from the cancellation under way."""
        sent, self._unmarked = self._unmarked, []
        held = sorted(self._holding)
        self._holding.clear()
        if not (sent or held):
            return
        settle = asyncio.ensure_future(self.store.settle(self.claimer, sent=sent, release=held))
        try:
            await asyncio.shield(asyncio.wait_for(settle, timeout=1.0))
        except Exception as exc:  # a timeout or the database: the claim runs out by itself
            log.debug("settling %d claimed rows on stop failed: %r", len(sent) + len(held), exc)
        # The CancelledError that brought us here is re-raised by the caller.

    async def _prune_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._pruned_at < self.policy.prune_every:
            return
        self._pruned_at = now
        wall = time.time()
        sent, handled = await self.store.prune(
            sent_before=wall - self.policy.keep_sent,
            handled_before=wall - self.policy.keep_handled,
        )
        if sent or handled:
            log.debug("pruned %d sent outbox rows and %d inbox rows", sent, handled)


def _nothing() -> None:
    pass

"""Subscriptions with nothing to claim, waiting together: one look for all of them per change.

Every commit to the event log, by any process, moves the file's change
count (:mod:`flotilla.events.sqlite_wake`), and most changes concern few of
the subscriptions of a process (an ack of one group, an event of one topic).
Waking each subscription to look for itself costs a trip to the worker
thread and a round of tasks per subscription per change; here one task
looks for all of them in one trip and wakes only those that may claim::

    subscription: claim found nothing -> wait(group, generation it read before
                  the claim, when its next row becomes visible) ... woken -> claim
    the task:     ┌─► waiters whose generation is behind the file's: look at their
                  │   groups in one trip (sqlite_log.looks); wake those with
                  │   something to claim, the others now know this generation
                  │   wake the waiters whose next row is visible by now
                  └── sleep until the file changes, a waiter arrives, or the first
                      next row becomes visible

A look that fails wakes the waiters it was for: their claim reports the
failure (and waits it out).  Nothing is lost to a missed change: a look
reads the file as it is, and the change watch's backstop moves the count
now and then anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from flotilla.aio import wait_first
from flotilla.clock import Clock
from flotilla.events.sqlite_log import GroupRef, Idle
from flotilla.events.sqlite_wake import ChangeWatch

__all__ = ["IdleSubscriptions", "Looks"]

log = logging.getLogger("flotilla.events")

Looks = Callable[[Sequence[tuple[GroupRef, float]]], Awaitable[list[Idle | None]]]
"""``looks([(group, now), ...])``: :func:`flotilla.events.sqlite_log.looks` on the worker thread."""


class _Waiter:
    __slots__ = ("generation", "group", "next_visible", "woken")

    def __init__(
        self,
        group: GroupRef,
        generation: int,
        next_visible: float | None,
        woken: asyncio.Future[None],
    ) -> None:
        self.group, self.generation, self.next_visible = group, generation, next_visible
        self.woken = woken


class IdleSubscriptions:
    """Where the subscriptions of one :class:`~flotilla.events.sqlite.SqliteEvents` wait."""

    def __init__(self, watch: ChangeWatch, looks: Looks, clock: Clock) -> None:
        self._watch, self._looks, self._clock = watch, looks, clock
        self._waiters: set[_Waiter] = set()
        self._arrived = asyncio.Event()
        self._closed = False

    async def wait(self, group: GroupRef, generation: int, next_visible: float | None) -> None:
        """Return once a claim for ``group`` may find something, or the log closes
        (:meth:`wake_all`; at once if it did already).

        ``generation``: the watch's, read before the claim that found nothing;
        ``next_visible``: when that claim said the group's next row becomes visible.
        """
        if self._closed:
            # A subscription that was busy (pruning, say) when the log closed would
            # otherwise wait here for a look that no task makes any more.
            return
        waiter = _Waiter(
            group, generation, next_visible, asyncio.get_running_loop().create_future()
        )
        self._waiters.add(waiter)
        self._arrived.set()
        try:
            await waiter.woken
        finally:
            self._waiters.discard(waiter)

    @property
    def waiting(self) -> int:
        """How many subscriptions wait now."""
        return len(self._waiters)

    def wake_all(self) -> None:
        """Wake every waiter, and from now on return at once (the log is closing)."""
        self._closed = True
        for waiter in list(self._waiters):
            self._wake(waiter)

    async def run(self) -> None:
        """Look and wake until cancelled (the owner's task)."""
        while True:
            self._arrived.clear()
            generation = self._watch.generation
            behind = [w for w in self._waiters if w.generation != generation]
            if behind:
                await self._look(behind, generation)
            now = self._clock.time()
            first: float | None = None
            for waiter in list(self._waiters):
                if waiter.next_visible is None:
                    continue
                if waiter.next_visible <= now:
                    self._wake(waiter)
                elif first is None or waiter.next_visible < first:
                    first = waiter.next_visible
            if self._arrived.is_set() or self._watch.generation != generation:
                continue  # a waiter came, or the file changed, while we looked
            waits = [self._watch.wait(generation), self._arrived.wait()]
            if first is not None:
                waits.append(self._clock.sleep(first - now))
            await wait_first(*waits)

    async def _look(self, behind: list[_Waiter], generation: int) -> None:
        now = self._clock.time()
        try:
            found = await self._looks([(waiter.group, now) for waiter in behind])
        except Exception as exc:  # the file: each claim will say what, and wait it out
            log.debug("events: a look for %d idle subscriptions failed: %r", len(behind), exc)
            for waiter in behind:
                self._wake(waiter)
            return
        for waiter, idle in zip(behind, found, strict=True):
            if idle is None:
                self._wake(waiter)
            else:
                waiter.generation, waiter.next_visible = generation, idle.next_visible

    def _wake(self, waiter: _Waiter) -> None:
        self._waiters.discard(waiter)
        if not waiter.woken.done():
            waiter.woken.set_result(None)

"""Idle subscriptions wait together: one look for all per change, and only who may claim wakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from flotilla.errors import Unavailable
from flotilla.events.sqlite_idle import IdleSubscriptions
from flotilla.events.sqlite_log import GroupRef, Idle
from flotilla.events.sqlite_wake import ChangeWatch
from flotilla.testing import FakeClock, wait_for

A, B, C = GroupRef("t", "a", ""), GroupRef("t", "b", ""), GroupRef("u", "c", "")


class Looks:
    """What a look finds per group (absent: nothing, no row waits on time); records each trip."""

    def __init__(self) -> None:
        self.found: dict[GroupRef, Idle | None] = {}
        self.trips: list[list[GroupRef]] = []
        self.fail = False

    async def __call__(self, asked: Sequence[tuple[GroupRef, float]]) -> list[Idle | None]:
        self.trips.append([group for group, _ in asked])
        if self.fail:
            raise Unavailable("event log: disk I/O error")
        return [self.found.get(group, Idle(None)) for group, _ in asked]


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.watch = ChangeWatch(tmp_path / "e.db")  # poked by hand; its loop is not run
        self.looks = Looks()
        self.clock = FakeClock()
        self.idle = IdleSubscriptions(self.watch, self.looks, self.clock)

    def waiting(self, group: GroupRef, next_visible: float | None = None) -> asyncio.Task[None]:
        return asyncio.ensure_future(self.idle.wait(group, self.watch.generation, next_visible))


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    setup = Setup(tmp_path)
    task = asyncio.ensure_future(setup.idle.run())
    yield setup
    task.cancel()
    await asyncio.wait([task])


async def test_one_look_per_change_for_all_and_only_who_may_claim_wakes(setup: Setup) -> None:
    a, b, c = setup.waiting(A), setup.waiting(B), setup.waiting(C)
    await wait_for(lambda: setup.idle.waiting == 3)
    setup.looks.found[B] = None  # b's group has something now
    setup.watch.poke()
    await asyncio.wait_for(b, timeout=5)
    # One trip for the three (none before: nothing had changed since their claims).
    assert [sorted(g.name for g in trip) for trip in setup.looks.trips] == [["a", "b", "c"]]
    assert [a.done(), c.done()] == [False, False]
    setup.watch.poke()
    await wait_for(lambda: len(setup.looks.trips) == 2)
    assert sorted(g.name for g in setup.looks.trips[1]) == ["a", "c"]
    assert setup.idle.waiting == 2
    setup.idle.wake_all()
    await asyncio.wait_for(asyncio.gather(a, c), timeout=5)


async def test_a_waiter_behind_the_file_is_looked_at_as_it_arrives(setup: Setup) -> None:
    stale = setup.watch.generation
    setup.watch.poke()  # a change between its claim and its wait
    setup.looks.found[A] = None
    await asyncio.wait_for(setup.idle.wait(A, stale, None), timeout=5)
    assert setup.looks.trips == [[A]]


async def test_a_row_becoming_visible_wakes_its_waiter_on_the_clock(setup: Setup) -> None:
    later = setup.waiting(A, next_visible=setup.clock.time() + 30)
    never = setup.waiting(B)
    await wait_for(lambda: setup.idle.waiting == 2)
    await setup.clock.advance(29)
    assert not later.done()
    await setup.clock.advance(1)
    await asyncio.wait_for(later, timeout=5)
    assert not never.done()
    assert setup.looks.trips == []  # time alone: no look needed
    setup.idle.wake_all()
    await asyncio.wait_for(never, timeout=5)


async def test_a_look_that_fails_wakes_its_waiters_to_claim(setup: Setup) -> None:
    a = setup.waiting(A)
    await wait_for(lambda: setup.idle.waiting == 1)
    setup.looks.fail = True
    setup.watch.poke()
    await asyncio.wait_for(a, timeout=5)  # the claim will say what is wrong, and wait it out


async def test_a_cancelled_waiter_leaves(setup: Setup) -> None:
    a = setup.waiting(A)
    await wait_for(lambda: setup.idle.waiting == 1)
    a.cancel()
    await asyncio.wait([a])
    assert setup.idle.waiting == 0


async def test_a_subscription_that_comes_to_wait_after_the_close_returns_at_once(
    setup: Setup,
) -> None:
    # One busy elsewhere (pruning) when the log closed: no look will ever wake it.
    setup.idle.wake_all()
    await asyncio.wait_for(setup.idle.wait(A, setup.watch.generation, None), timeout=5)
    assert setup.idle.waiting == 0

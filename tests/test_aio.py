"""The shared asyncio helpers: stopping an owned task without swallowing a cancellation."""

from __future__ import annotations

import asyncio
import logging

import pytest

from flotilla.aio import cancel_and_wait


async def test_cancel_and_wait_returns_once_the_task_has_ended() -> None:
    ended = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()

    task = asyncio.create_task(forever())
    await asyncio.sleep(0)  # let it start
    await cancel_and_wait(task)  # the task's own cancellation is not ours: no raise
    assert task.cancelled()
    assert ended.is_set()


async def test_a_task_that_failed_is_logged_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken(), name="the broken one")
    await asyncio.wait([task])
    with caplog.at_level(logging.ERROR, logger="flotilla"):
        await cancel_and_wait(task, logging.getLogger("flotilla.test"))
    (record,) = caplog.records
    assert "the broken one" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


async def test_a_cancellation_of_the_waiter_propagates() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # cleanup that takes a while

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(task))
    await asyncio.sleep(0)  # the stopper now waits for the task
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await asyncio.wait([task])
    assert task.cancelled()

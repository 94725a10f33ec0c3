"""Small asyncio helpers shared by several layers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ["cancel_and_wait", "wait_first"]

_log = logging.getLogger("flotilla")


async def wait_first(*aws: Awaitable[object]) -> None:
    """Wait until the first of ``aws`` finishes, then cancel the others.

    Every task started here has ended when this returns or raises (cancelled
    included), so none outlives its caller.  An exception from the first
    finisher is raised.
    """
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in done:
        task.result()


async def cancel_and_wait(task: asyncio.Task[Any], log: logging.Logger = _log) -> None:
    """Cancel ``task`` (one the caller owns) and return once it has ended.

    The task's own ``CancelledError`` stays inside it, while a cancellation of
    the caller as it waits propagates: awaiting the task itself under
    ``suppress(CancelledError)`` would swallow both.  A task that had failed
    instead is logged on ``log``, since nobody else will look at it.
    """
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())

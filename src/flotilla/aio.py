"""Small asyncio helpers shared by several layers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

__all__ = ["wait_first"]


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

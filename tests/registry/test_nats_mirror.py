"""The mirror's own life, with a stand-in for a NATS KV watch (the real one: test_nats_kv)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from nats.js.kv import KeyValue

from flotilla.errors import Unavailable
from flotilla.registry.nats_mirror import Mirror


class SilentWatch:
    """A watch that never delivers anything, and says when it is stopped."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.watching = asyncio.Event()

    def __aiter__(self) -> SilentWatch:
        return self

    async def __anext__(self) -> Any:
        self.watching.set()
        await asyncio.Event().wait()

    async def stop(self) -> None:
        self.stopped.set()


class SilentBucket:
    def __init__(self) -> None:
        self.watch = SilentWatch()

    async def watchall(self) -> SilentWatch:
        return self.watch


def _others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_a_start_that_times_out_leaves_no_watch() -> None:
    bucket = SilentBucket()
    before = _others()
    with pytest.raises(Unavailable, match="did not load"):
        await Mirror(what="test").start(cast(KeyValue, bucket), timeout=0.05)
    assert bucket.watch.stopped.is_set()
    assert _others() == before


async def test_a_cancelled_start_leaves_no_watch() -> None:
    bucket = SilentBucket()
    before = _others()
    starting = asyncio.create_task(Mirror(what="test").start(cast(KeyValue, bucket), timeout=60))
    async with asyncio.timeout(5):
        await bucket.watch.watching.wait()
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert bucket.watch.stopped.is_set()
    assert _others() == before

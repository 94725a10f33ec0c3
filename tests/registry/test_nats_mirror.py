"""The mirror's own life, with a stand-in for a NATS KV watch (the real one: test_nats_kv)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
import pytest
from nats.js.kv import KeyValue

from flotilla.errors import Unavailable
from flotilla.registry.nats_mirror import Mirror, instance_key
from flotilla.testing.cluster import wait_for


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


def _put(key: str, value: object, revision: int) -> KeyValue.Entry:
    return KeyValue.Entry("b", key, msgspec.json.encode(value), revision, 0, None, None)


class ScriptedWatch:
    """A watch that delivers ``updates`` and then ends, or stays quiet when ``ends`` is False."""

    def __init__(self, updates: list[KeyValue.Entry | None], *, ends: bool) -> None:
        self.updates = list(updates)
        self.ends = ends
        self.stopped = asyncio.Event()

    def __aiter__(self) -> ScriptedWatch:
        return self

    async def __anext__(self) -> KeyValue.Entry | None:
        if self.updates:
            return self.updates.pop(0)
        if not self.ends:
            await self.stopped.wait()  # as nats-py's: stop() ends the iteration
        raise StopAsyncIteration

    async def stop(self) -> None:
        self.stopped.set()


class ScriptedBucket:
    def __init__(self, *watches: ScriptedWatch) -> None:
        self.watches = list(watches)

    async def watchall(self) -> ScriptedWatch:
        return self.watches.pop(0)


async def test_a_watch_that_ends_is_watched_again_from_a_fresh_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lease = {"ttl": 60.0, "expires_at": 2e9}
    entry = {"instance": {"id": "a", "service": "svc", "address": "h:1"}, "lease": "l1"}
    first = ScriptedWatch([_put("l.l1", lease, 1), _put(instance_key("a"), entry, 2), None],
                          ends=True)  # fmt: skip
    # Meanwhile the instance was deleted, and the delete marker compacted away:
    # only a fresh state forgets it.
    second = ScriptedWatch([_put("l.l1", lease, 3), None], ends=False)
    mirror = Mirror(what="test")
    try:
        await mirror.start(cast(KeyValue, ScriptedBucket(first, second)), timeout=5)
        await wait_for(lambda: mirror.live and mirror.revision == 3, timeout=5)
        assert mirror.snapshot(None, 0.0)[0] == []
        assert list(mirror.leases) == ["l1"]
    finally:
        await mirror.aclose()
    assert any("the bucket watch ended" in r.getMessage() for r in caplog.records)
    with pytest.raises(Unavailable, match="closed"):
        mirror.check_live()


async def test_a_mirror_that_lost_its_connection_is_not_live_until_it_watched_again() -> None:
    watches = [ScriptedWatch([None], ends=False), ScriptedWatch([None], ends=False)]
    mirror = Mirror(what="test")
    try:
        await mirror.start(cast(KeyValue, ScriptedBucket(*watches)), timeout=5)
        mirror.check_live()
        mirror.lost("disconnected from NATS")
        with pytest.raises(Unavailable, match="disconnected from NATS"):
            mirror.check_live()
        await mirror.rewatch()
        await wait_for(lambda: mirror.live, timeout=5)
        assert watches[0].stopped.is_set()
    finally:
        await mirror.aclose()

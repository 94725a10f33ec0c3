"""Coalesced frame writes, against a fake transport that records each ``write``."""

from __future__ import annotations

import asyncio
from typing import cast

from flotilla.transport.writer import (
    FLUSH_BYTES,
    FLUSH_FRAMES,
    WRITE_BUFFER_HIGH,
    WRITE_BUFFER_LOW,
    FrameWriter,
)


class FakeTransport:
    """Records every ``write``; ``close`` makes it refuse more, as a closing transport does."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.limits: dict[str, int] = {}

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = {"high": high, "low": low}

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes | bytearray) -> None:
        assert not self.closing, "write on a closing transport"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


def make() -> tuple[FrameWriter, FakeTransport]:
    transport = FakeTransport()
    loop = asyncio.get_running_loop()
    return FrameWriter(cast(asyncio.Transport, transport), loop), transport


async def next_iteration() -> None:
    # A flush scheduled with call_soon runs before a task resumed after sleep(0).
    await asyncio.sleep(0)


def frames(n: int, prefix: str = "f") -> list[bytes]:
    return [f"<{prefix}{i}>".encode() for i in range(n)]


async def test_frames_sent_in_one_iteration_leave_in_one_write() -> None:
    writer, transport = make()
    sent = frames(5)
    for frame in sent:
        writer.send(frame)
    assert transport.writes == []  # nothing leaves before the end of the iteration
    await next_iteration()
    assert transport.writes == [b"".join(sent)]  # one write, in the order sent


async def test_each_iteration_gets_its_own_write() -> None:
    writer, transport = make()
    writer.send(b"<a>")
    writer.send(b"<b>")
    await next_iteration()
    writer.send(b"<c>")
    await next_iteration()
    await next_iteration()  # no frame: no empty write
    assert transport.writes == [b"<a><b>", b"<c>"]


async def test_one_flush_is_scheduled_per_iteration(monkeypatch) -> None:
    writer, transport = make()
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    real_call_soon = loop.call_soon

    def call_soon(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
        scheduled.append(callback)
        return real_call_soon(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", call_soon)
    for frame in frames(10):
        writer.send(frame)
    monkeypatch.undo()
    assert scheduled == [writer.flush]
    await next_iteration()
    assert len(transport.writes) == 1


async def test_a_full_batch_is_written_at_once() -> None:
    writer, transport = make()
    batch = frames(FLUSH_FRAMES)
    for frame in batch[:-1]:
        writer.send(frame)
    assert transport.writes == []
    writer.send(batch[-1])
    # The 16th frame sends the batch without waiting for the end of the iteration.
    assert FLUSH_FRAMES == 16
    assert transport.writes == [b"".join(batch)]

    # What follows starts a new batch, written at the end of the iteration.
    writer.send(b"<next>")
    assert len(transport.writes) == 1
    await next_iteration()
    assert transport.writes == [b"".join(batch), b"<next>"]


async def test_many_frames_leave_in_batches_of_flush_frames() -> None:
    writer, transport = make()
    sent = frames(2 * FLUSH_FRAMES + 3)
    for frame in sent:
        writer.send(frame)
    assert len(transport.writes) == 2
    await next_iteration()
    assert [len(w) for w in transport.writes] == [
        len(b"".join(sent[:FLUSH_FRAMES])),
        len(b"".join(sent[FLUSH_FRAMES : 2 * FLUSH_FRAMES])),
        len(b"".join(sent[2 * FLUSH_FRAMES :])),
    ]
    assert b"".join(transport.writes) == b"".join(sent)


async def test_an_unbatched_frame_leaves_at_once_behind_those_buffered() -> None:
    writer, transport = make()
    writer.send(b"<lone>", batch=False)
    assert transport.writes == [b"<lone>"]  # a lone call waits for nothing

    writer.send(b"<a>")
    writer.send(b"<b>")
    writer.send(b"<now>", batch=False)
    assert transport.writes == [b"<lone>", b"<a><b><now>"]  # order kept, one write
    await next_iteration()
    assert transport.writes == [b"<lone>", b"<a><b><now>"]  # nothing left to flush


async def test_explicit_flush_sends_what_is_buffered() -> None:
    writer, transport = make()
    writer.send(b"<a>")
    writer.flush()
    assert transport.writes == [b"<a>"]
    writer.flush()  # nothing buffered: no write
    await next_iteration()
    assert transport.writes == [b"<a>"]


async def test_nothing_is_written_after_the_transport_closes() -> None:
    writer, transport = make()
    writer.send(b"<buffered>")
    transport.close()
    await next_iteration()  # the scheduled flush finds the transport closing
    assert transport.writes == []

    writer.send(b"<late>")
    writer.send(b"<lone>", batch=False)
    for frame in frames(FLUSH_FRAMES):
        writer.send(frame)
    writer.flush()
    await next_iteration()
    assert transport.writes == []


async def test_frames_dropped_on_close_are_not_kept() -> None:
    # Frames buffered when the transport closed are dropped, not held for ever.
    writer, transport = make()
    for frame in frames(FLUSH_FRAMES - 1):
        writer.send(frame)
    transport.close()
    await next_iteration()
    assert writer._frames == []


async def test_the_transport_gets_the_write_buffer_limits() -> None:
    writer, transport = make()
    assert transport.limits == {"high": WRITE_BUFFER_HIGH, "low": WRITE_BUFFER_LOW}
    assert WRITE_BUFFER_LOW < WRITE_BUFFER_HIGH
    assert not writer.paused


async def test_buffered_counts_frames_not_yet_written() -> None:
    writer, _ = make()
    writer.send(b"12345")
    writer.send(b"678")
    assert writer.buffered == 8
    await next_iteration()
    assert writer.buffered == 0  # the fake transport sends everything at once


async def test_a_large_frame_is_written_at_once_with_those_before_it() -> None:
    writer, transport = make()
    writer.send(b"<small>")
    large = b"x" * FLUSH_BYTES
    writer.send(large)
    assert transport.writes == [b"<small>" + large]  # not at the end of the iteration

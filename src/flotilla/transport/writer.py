"""Coalescing frame writes: a few ``write`` calls per loop iteration, not one per frame.

A write is a system call, and at high concurrency it costs more than
everything else a frame goes through.  The first frame sent in an event-loop
iteration leaves at once, so a lone call waits for nothing; the frames that
follow it in the same iteration (the replies to one read, the calls of the
tasks one read woke) leave together at the end of the iteration.  A batch is
also written as soon as it holds :data:`FLUSH_FRAMES` frames: the peer starts on
those while this side prepares the rest, instead of the two sides taking turns
on whole batches.
"""

from __future__ import annotations

import asyncio

__all__ = ["FLUSH_FRAMES", "FrameWriter"]

FLUSH_FRAMES = 16


class FrameWriter:
    """Buffers encoded frames for one transport and writes them in batches."""

    __slots__ = ("_frames", "_loop", "_scheduled", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._frames: list[bytes | bytearray] = []
        self._scheduled = False

    def send(self, frame: bytes | bytearray) -> None:
        if not self._scheduled:
            # The first frame of a loop iteration leaves at once (a lone call
            # waits for nothing); the end of the iteration sends what follows.
            self._scheduled = True
            self._loop.call_soon(self.flush)
            if not self.transport.is_closing():
                self.transport.write(frame)
            return
        frames = self._frames
        frames.append(frame)
        if len(frames) >= FLUSH_FRAMES:
            self._write()

    def flush(self) -> None:
        """Send what is buffered; called at the end of the loop iteration."""
        self._scheduled = False
        self._write()

    def _write(self) -> None:
        frames = self._frames
        if not frames:
            return
        self._frames = []
        if not self.transport.is_closing():
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

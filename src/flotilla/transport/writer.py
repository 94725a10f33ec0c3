"""Coalescing frame writes: a few ``write`` calls per loop iteration, not one per frame.

A write is a system call, and at high concurrency it costs more than
everything else a frame goes through.  While several calls are in flight on a
connection, the frames sent in one event-loop iteration (the replies to one
read, the calls of the tasks one read woke) leave together at the end of the
iteration; a lone call's frame leaves at once.  A batch is also written as
soon as it holds :data:`FLUSH_FRAMES` frames: the peer starts on those while
this side prepares the rest, instead of the two sides taking turns on whole
batches.  A frame of :data:`FLUSH_BYTES` or more is written at once with what
came before it: it gains nothing from company, and the transport's flow
control (below) must see it now, not at the end of the iteration.

The writer also keeps the transport's flow control: once more than
:data:`WRITE_BUFFER_HIGH` bytes wait to leave (the peer reads slower than we
write, or not at all), the transport reports the connection *paused* until
the backlog drains below :data:`WRITE_BUFFER_LOW`.  1 MiB holds a few thousand
ordinary replies, so a healthy connection is never paused by a burst, while a
peer that stops reading costs the server about that much plus what its calls
already in flight produce.  What a connection does while paused is its own
policy (the server stops reading and starting calls; the client fails new
calls at once).
"""

from __future__ import annotations

import asyncio

__all__ = ["FLUSH_BYTES", "FLUSH_FRAMES", "WRITE_BUFFER_HIGH", "WRITE_BUFFER_LOW", "FrameWriter"]

FLUSH_FRAMES = 16
FLUSH_BYTES = 64 * 1024
WRITE_BUFFER_HIGH = 1024 * 1024
WRITE_BUFFER_LOW = 256 * 1024


class FrameWriter:
    """Buffers encoded frames for one transport and writes them in batches."""

    __slots__ = ("_frames", "_loop", "_scheduled", "paused", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._frames: list[bytes | bytearray] = []
        self._scheduled = False
        self.paused = False
        """True between the protocol's ``pause_writing`` and ``resume_writing``."""
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_LOW)

    @property
    def buffered(self) -> int:
        """Bytes written and not yet sent, plus frames waiting for the end of the iteration."""
        return self.transport.get_write_buffer_size() + sum(len(f) for f in self._frames)

    def send(self, frame: bytes | bytearray, *, batch: bool = True) -> None:
        """Send ``frame``; ``batch=False`` says no other frame will follow soon.

        The connection knows: with one call in flight there is nothing to wait
        for, and scheduling a flush for later costs a lone call more latency
        than the write it would save.
        """
        frames = self._frames
        frames.append(frame)
        if not batch or len(frames) >= FLUSH_FRAMES or len(frame) >= FLUSH_BYTES:
            self._write()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

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

"""Output that never blocks its writer: a bounded queue drained by a thread of its own.

A replica's stdout and stderr are a pipe to its supervisor.  When nobody reads
the pipe (the supervisor stopped with Ctrl-Z, or busy), it fills, and a plain
``write`` blocks; done from the event loop (a log call in a handler), that
freezes the whole node: no heartbeat, so it leaves the registry, and no call
is answered.  ``flotilla serve`` therefore replaces ``sys.stdout`` and
``sys.stderr`` with a :class:`QueuedOutput`: ``write`` only appends to a
bounded in-memory queue, and a daemon thread copies the queue to the file
descriptor, blocking there instead of the loop.

When the queue is full, new text is dropped and counted; once the thread can
write again it first says how many pieces were lost, so the gap is visible.
The alternative, children logging to files that the supervisor tails, never
drops a line but needs rotation and cleanup on disk for chatty services; a
replica's output is for people watching, and a bounded loss under a stalled
reader is the better trade.
"""

from __future__ import annotations

import collections
import io
import os
import threading
import time

__all__ = ["QueuedOutput"]


class QueuedOutput(io.TextIOBase):
    """A text stream over file descriptor ``fd`` whose ``write`` and ``flush`` never block.

    ``limit`` bounds the queued text, in characters.  ``flush`` returns at once
    (``print(..., flush=True)`` is common, and must not wait for a stalled
    reader); :meth:`drain` waits, within a bound, for the queue to be written,
    so output written just before exit still gets out when the reader keeps up.
    """

    def __init__(self, fd: int, *, limit: int = 1 << 20) -> None:
        super().__init__()
        self._fd = fd
        self._limit = limit
        self._queue: collections.deque[str] = collections.deque()
        self._queued = 0  # characters in _queue
        self._dropped = 0  # writes lost since the last report
        self._writing = False  # the thread holds text it took from the queue
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name=f"output-fd{fd}", daemon=True)
        self._thread.start()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            # Text only, as sys.stderr: click probes `write(b"")` to tell a binary stream.
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not text:
            return 0
        with self._changed:
            if self._queued + len(text) > self._limit:
                self._dropped += 1
            else:
                self._queue.append(text)
                self._queued += len(text)
                self._changed.notify_all()
        return len(text)

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as it can (see the class docstring)."""

    def drain(self, timeout: float = 2.0) -> None:
        """Wait, at most ``timeout`` seconds, until everything queued has been written."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queue or self._writing:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return
                self._changed.wait(left)

    @property
    def dropped(self) -> int:
        """Writes dropped since the last time the loss was reported."""
        with self._changed:
            return self._dropped

    def _drain(self) -> None:
        while True:
            with self._changed:
                while not self._queue:
                    self._writing = False
                    self._changed.notify_all()  # a flush may be waiting for this
                    self._changed.wait()
                text = "".join(self._queue)
                self._queue.clear()
                self._queued = 0
                dropped, self._dropped = self._dropped, 0
                self._writing = True
            if dropped:
                # What was dropped came after what was queued: it filled the queue.
                text += f"[{dropped} writes of output dropped: the reader was not keeping up]\n"
            self._write_all(text.encode(errors="replace"))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # the reader is gone (EPIPE): nothing more can be shown
            view = view[written:]

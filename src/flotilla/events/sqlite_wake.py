"""Waking consumers promptly when any process on the machine writes to the event log.

SQLite cannot notify another process, so consumers poll; this makes the poll
nearly free.  In WAL mode every commit, by any process, rewrites the
wal-index header at the start of the ``-shm`` file (its change counter, frame
count and checksums: see SQLite's "WAL-mode file format"), and that file is
shared memory every connection maps.  Reading its first 48 bytes is one
``pread`` on the event loop, about a microsecond, with no thread hop and no
lock, so it can run every millisecond while consumers are active.

The header is only a hint: when it cannot be read (no ``-shm`` yet, the file
removed) or stays the same, a slow ``backstop`` tick reports a change
anyway, so a consumer never depends on the hint alone.  A
missed hint costs latency, never an event: a wake-up only makes consumers
run their claim, which reads the truth.

    ┌─ sleep(interval) ◄────────────────────────────┐
    └─► header differs, unreadable, or backstop due ─┴─ yes ─► generation += 1, wake waiters

The interval is ``fast`` (1 ms) while the log changed within the last
``active_for`` seconds and ``slow`` after, so an idle subscriber costs little
and a busy one waits at most a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

__all__ = ["ChangeWatch"]

# The wal-index header is 48 bytes; SQLite keeps two copies, the first at 0.
_HEADER = 48


class ChangeWatch:
    """Counts changes to one SQLite file in WAL mode; waiters wake on the next one.

    Real time, not a Clock: this waits for other processes' I/O.
    """

    def __init__(
        self,
        path: Path,
        *,
        fast: float = 0.001,
        slow: float = 0.02,
        active_for: float = 2.0,
        backstop: float = 0.5,
    ) -> None:
        self._shm = Path(f"{path}-shm")
        self._fast, self._slow, self._active_for = fast, slow, active_for
        self._backstop = backstop
        self.generation = 0
        """Moves on every change seen (or assumed); compare before and after a claim."""
        self._changed = asyncio.Event()
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._header = b""
        self._last_change = self._last_wake = time.monotonic()

    def poke(self) -> None:
        """A change made here (a local publish): wake waiters now, without polling for it."""
        self.generation += 1
        self._last_change = self._last_wake = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, generation: int) -> None:
        """Return once :attr:`generation` has moved past ``generation``."""
        if self.generation == generation:
            await self._changed.wait()

    async def run(self) -> None:
        """Watch until cancelled (the owner's task)."""
        try:
            while True:
                now = time.monotonic()
                active = now - self._last_change < self._active_for
                await asyncio.sleep(self._fast if active else self._slow)
                now = time.monotonic()
                if self._header_moved():
                    self._last_change = now
                    self.poke()
                elif now - self._last_wake >= self._backstop:
                    self.poke()
                    self._last_change = now - self._active_for  # a backstop is not activity
        finally:
            self._close()

    def _header_moved(self) -> bool:
        try:
            identity = _identity(self._shm)
            if self._fd is None or identity != self._identity:
                self._close()
                self._fd = os.open(self._shm, os.O_RDONLY)
                self._identity = identity
            header = os.pread(self._fd, _HEADER, 0)
        except OSError:
            self._close()
            return False  # no -shm now: the backstop tick covers it
        if header == self._header:
            return False
        self._header = header
        return True

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = self._identity = None


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino

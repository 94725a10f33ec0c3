"""One supervisor per data directory: an ``flock`` on ``<data_dir>/supervisor.lock``.

Two ``flotilla run`` of the same system would start two sets of replicas on
one registry, silently.  The second one is refused instead, naming the pid of
the first (written in the lock file).

Why ``flock`` and not "a pid file that exists": the kernel drops the lock when
its holder dies, however it dies (``kill -9`` included), so a crashed
supervisor never leaves a stale claim to clean by hand.  The file itself is
never removed: unlinking it while another process has it open would let two
processes each lock a different inode of the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from flotilla.errors import FailedPrecondition

__all__ = ["LOCK_FILE", "SystemLock"]

LOCK_FILE = "supervisor.lock"


class SystemLock:
    """The claim of this process on a data directory; :meth:`acquire` then :meth:`release`."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`FailedPrecondition` naming the holder's pid."""
        if self._fd is not None:
            return
        # O_CLOEXEC (Python's default too): a child must not inherit the lock,
        # or the directory would stay claimed after the supervisor died.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder is not None else "another process"
            raise FailedPrecondition(
                f"the system in {self.path.parent} is already running under "
                f"flotilla run ({who}); stop that one first"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the claim up; idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # nobody holds it: no pid to name
        os.close(fd)  # closing drops the flock


def _read_pid(fd: int) -> int | None:
    # The holder writes its pid right after locking; a reader that comes in
    # between sees an empty file and says "another process".
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None

"""Rate-limited warnings: the first of a kind at once, then one summary line per interval.

A peer that misbehaves once deserves a line naming it; ten thousand sockets
opened by an attacker must not become ten thousand lines (an attack on the
disk, and a haystack hiding everything else).  So each *kind* of event (say
"timed out", "malformed") is logged in full the first time it happens in a
quiet period; later ones within :data:`SUMMARY_INTERVAL` are only counted, and
when the interval ends one line sums them all up::

    closing connection from 10.0.0.7:51234: malformed frame: ...
    closed 4,812 connections in their handshake in the last 10 s: 4,800 timed out, 12 malformed

A kind that was counted stays quiet through the next interval too, so a
sustained attack costs one line per interval; a kind quiet for a whole
interval is logged at once again when it comes back.
"""

from __future__ import annotations

import asyncio
import logging

__all__ = ["SUMMARY_INTERVAL", "LogSummary"]

SUMMARY_INTERVAL = 10.0


class LogSummary:
    """Warnings of several kinds, on ``logger``, at most one summary per interval.

    ``what`` names what is counted, e.g. ``"connections in their handshake"``;
    ``verb`` what happened to them, e.g. ``"closed"``.  Call :meth:`close` when
    done: it logs what is still counted and stops the timer.
    """

    def __init__(
        self,
        logger: logging.Logger,
        loop: asyncio.AbstractEventLoop,
        *,
        verb: str,
        what: str,
        interval: float = SUMMARY_INTERVAL,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._loop = loop
        self._verb = verb
        self._what = what
        self._counts: dict[str, int] = {}
        # Kinds logged or counted in this interval: their next event is counted.
        self._muted: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None

    def warn(self, kind: str, message: str, *args: object) -> None:
        """Log ``message % args`` now if ``kind`` is quiet, else count it for the summary."""
        if kind in self._muted:
            self._counts[kind] = self._counts.get(kind, 0) + 1
        else:
            self._muted.add(kind)
            self.logger.warning(message, *args)
        if self._timer is None:
            self._timer = self._loop.call_later(self.interval, self._end_interval)

    def close(self) -> None:
        """Log the summary of what is counted so far, and stop; idempotent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._log_summary()
        self._muted.clear()

    def _end_interval(self) -> None:
        self._timer = None
        # Kinds counted in this interval stay muted through the next one.
        self._muted = set(self._counts)
        self._log_summary()
        if self._muted:
            self._timer = self._loop.call_later(self.interval, self._end_interval)

    def _log_summary(self) -> None:
        counts, self._counts = self._counts, {}
        if not counts:
            return
        parts = ", ".join(f"{count:,} {kind}" for kind, count in counts.items())
        self.logger.warning(
            "%s %s %s in the last %g s: %s",
            self._verb,
            f"{sum(counts.values()):,}",
            self._what,
            self.interval,
            parts,
        )

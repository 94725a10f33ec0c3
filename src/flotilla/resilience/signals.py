"""Signals: what the resilience layers did, as values others can watch.

Breaker transitions, ejections, retries, hedges, an exhausted budget and shed
load are each a :class:`Signal`.  A node owns one :class:`Signals` hub (no
global state); the layers it builds emit into it, and the observability work,
``flotilla ps`` and the ``flotilla run`` table read from it.  Emitting never
blocks and never fails the call that caused it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

__all__ = ["Signal", "SignalKind", "Signals"]

log = logging.getLogger("flotilla.resilience")


class SignalKind:
    """The kinds of signal, as stable strings (they name metrics and log events)."""

    BREAKER_OPENED = "breaker.opened"
    BREAKER_HALF_OPEN = "breaker.half_open"
    BREAKER_CLOSED = "breaker.closed"
    EJECTED = "endpoint.ejected"
    RESTORED = "endpoint.restored"
    PANIC = "balance.panic"
    RETRY = "retry"
    HEDGE = "hedge"
    BUDGET_EXHAUSTED = "retry.budget_exhausted"
    SHED = "load.shed"
    FAULT = "fault.injected"
    FALLBACK = "fallback"


class Signal(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a resilience layer did."""

    kind: str
    """One of :class:`SignalKind`."""
    service: str
    endpoint: str | None = None
    """The endpoint's instance id, when the signal is about one."""
    method: str | None = None
    detail: Mapping[str, Any] = msgspec.field(default_factory=dict)
    at: float = msgspec.field(default_factory=time.time)
    """Wall-clock time, Unix seconds."""


Listener = Callable[[Signal], None]


class Signals:
    """A node's hub of signals: listeners are called in order; the last ``keep`` are kept."""

    def __init__(self, keep: int = 256) -> None:
        self.recent: deque[Signal] = deque(maxlen=keep)
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every signal from now on; returns a function that stops it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, kind: str, service: str, **fields: Any) -> None:
        """Record a signal (``fields``: endpoint, method, detail) and tell every listener."""
        signal = Signal(kind=kind, service=service, **fields)
        self.recent.append(signal)
        for listener in tuple(self._listeners):
            try:
                listener(signal)
            except Exception:  # a broken listener must not fail the call that emitted
                log.exception("signal listener failed on %s", kind)

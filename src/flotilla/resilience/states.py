"""The breaker states a node holds toward others, as its signals tell them.

The breaker layer emits ``breaker.opened``, ``breaker.half_open`` and
``breaker.closed`` into the node's :class:`~flotilla.resilience.signals.Signals`
hub; :class:`BreakerStates` listens and keeps the last one per breaker
(service, endpoint, method), which is that breaker's state now.  What
``/status``, ``flotilla ps`` and the ``flotilla run`` table show comes from here,
not from the breakers themselves: the mechanism stays free of the displays.

A breaker whose last signal is ``closed`` is not kept: a closed breaker is
the ordinary case, and an endpoint that left the system must not stay listed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import msgspec

from flotilla.resilience.signals import Signal, SignalKind, Signals

__all__ = ["BreakerState", "BreakerStates", "summarize"]

_STATE_OF = {
    SignalKind.BREAKER_OPENED: "open",
    SignalKind.BREAKER_HALF_OPEN: "half_open",
    SignalKind.BREAKER_CLOSED: "closed",
}


class BreakerState(msgspec.Struct, frozen=True, kw_only=True):
    """One breaker that is not closed, as ``/status`` reports it."""

    service: str
    endpoint: str | None
    method: str | None
    state: str
    """``open`` or ``half_open``."""
    since: float
    """Wall-clock Unix seconds of the signal that put it there."""


class BreakerStates:
    """The breakers of a node that are open or half-open, kept from its signals hub."""

    def __init__(self, signals: Signals) -> None:
        self._states: dict[tuple[str, str | None, str | None], BreakerState] = {}
        self.close: Callable[[], None] = signals.listen(self._on_signal)
        """Stop following the hub."""

    def _on_signal(self, signal: Signal) -> None:
        state = _STATE_OF.get(signal.kind)
        if state is None:
            return
        key = (signal.service, signal.endpoint, signal.method)
        if state == "closed":
            self._states.pop(key, None)
            return
        self._states[key] = BreakerState(
            service=signal.service,
            endpoint=signal.endpoint,
            method=signal.method,
            state=state,
            since=signal.at,
        )

    def current(self) -> list[BreakerState]:
        """Every breaker not closed, by service, endpoint and method."""
        return sorted(
            self._states.values(),
            key=lambda s: (s.service, s.endpoint or "", s.method or ""),
        )


def summarize(states: Iterable[str]) -> str:
    """``"2 open, 1 half_open"`` for states as :class:`BreakerState` names them; ``"closed"``:
    none (every breaker closed)."""
    counts = Counter(states)
    parts = [f"{counts[state]} {state}" for state in ("open", "half_open") if counts[state]]
    return ", ".join(parts) or "closed"

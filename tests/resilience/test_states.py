"""BreakerStates: the last breaker signal per breaker, closed ones dropped."""

from __future__ import annotations

from flotilla.resilience.signals import SignalKind, Signals
from flotilla.resilience.states import BreakerStates, summarize


def test_the_last_signal_of_each_breaker_is_its_state() -> None:
    signals = Signals()
    states = BreakerStates(signals)
    signals.emit(SignalKind.BREAKER_OPENED, "carts", endpoint="carts-b")
    signals.emit(SignalKind.BREAKER_OPENED, "carts", endpoint="carts-a", method="add")
    signals.emit(SignalKind.BREAKER_OPENED, "carts", endpoint="carts-a")
    signals.emit(SignalKind.BREAKER_HALF_OPEN, "carts", endpoint="carts-b")
    signals.emit(SignalKind.EJECTED, "carts", endpoint="carts-c")  # not a breaker signal
    current = [(s.endpoint, s.method, s.state) for s in states.current()]
    assert current == [
        ("carts-a", None, "open"),
        ("carts-a", "add", "open"),
        ("carts-b", None, "half_open"),
    ]
    signals.emit(SignalKind.BREAKER_CLOSED, "carts", endpoint="carts-b")
    signals.emit(SignalKind.BREAKER_CLOSED, "carts", endpoint="never-opened")
    assert [s.endpoint for s in states.current()] == ["carts-a", "carts-a"]


def test_close_stops_following_the_hub() -> None:
    signals = Signals()
    states = BreakerStates(signals)
    states.close()
    signals.emit(SignalKind.BREAKER_OPENED, "carts", endpoint="carts-a")
    assert states.current() == []


def test_summarize_counts_open_then_half_open() -> None:
    assert summarize(["open", "half_open", "open"]) == "2 open, 1 half_open"
    assert summarize(["half_open"]) == "1 half_open"
    assert summarize([]) == "closed"

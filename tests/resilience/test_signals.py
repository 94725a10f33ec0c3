"""The signals hub: listeners in order, a broken one harmless, the recent ones kept."""

from __future__ import annotations

import logging

import pytest

from flotilla.resilience.signals import Signal, SignalKind, Signals


def test_listeners_hear_every_signal_until_they_stop() -> None:
    signals = Signals()
    heard: list[tuple[str, Signal]] = []
    stop_first = signals.listen(lambda s: heard.append(("first", s)))
    signals.listen(lambda s: heard.append(("second", s)))
    signals.emit(SignalKind.RETRY, "catalog", method="get", detail={"attempt": 2})
    stop_first()
    signals.emit(SignalKind.HEDGE, "catalog")
    assert [(who, s.kind) for who, s in heard] == [
        ("first", "retry"),
        ("second", "retry"),
        ("second", "hedge"),
    ]
    first = heard[0][1]
    assert (first.service, first.method, first.endpoint) == ("catalog", "get", None)
    assert first.detail == {"attempt": 2}


def test_a_broken_listener_is_logged_and_the_others_still_hear(
    caplog: pytest.LogCaptureFixture,
) -> None:
    signals = Signals()
    heard: list[str] = []

    def broken(signal: Signal) -> None:
        raise RuntimeError("listener bug")

    signals.listen(broken)
    signals.listen(lambda s: heard.append(s.kind))
    with caplog.at_level(logging.ERROR, logger="flotilla.resilience"):
        signals.emit(SignalKind.SHED, "orders")  # must not raise into the emitting call
    assert heard == ["load.shed"]
    assert "signal listener failed on load.shed" in caplog.text


def test_only_the_last_signals_are_kept() -> None:
    signals = Signals(keep=2)
    for service in ("a", "b", "c"):
        signals.emit(SignalKind.FAULT, service)
    assert [s.service for s in signals.recent] == ["b", "c"]

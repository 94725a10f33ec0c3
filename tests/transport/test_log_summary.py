"""Rate-limited warnings: first of a kind at once, the rest summed up once per interval."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import cast

import pytest

from flotilla.testing import wait_for
from flotilla.transport.log_summary import LogSummary

LOGGER = "flotilla.test.summary"


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    caplog.set_level(logging.WARNING, LOGGER)
    got: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record.getMessage())

    handler = Collect()
    logging.getLogger(LOGGER).addHandler(handler)
    yield got
    logging.getLogger(LOGGER).removeHandler(handler)


def summary(interval: float) -> LogSummary:
    return LogSummary(
        logging.getLogger(LOGGER),
        asyncio.get_running_loop(),
        verb="closed",
        what="connections in their handshake",
        interval=interval,
    )


async def test_first_of_each_kind_at_once_then_counted(lines: list[str]) -> None:
    log = summary(interval=60.0)
    log.warn("malformed", "closing connection from %s: %s", "a:1", "bad frame")
    for _ in range(4_800):
        log.warn("timed out", "closing connection from %s: no handshake", "b:2")
    for _ in range(12):
        log.warn("malformed", "closing connection from %s: %s", "c:3", "bad frame")
    assert lines == [
        "closing connection from a:1: bad frame",
        "closing connection from b:2: no handshake",
    ]
    log.close()
    assert lines[2:] == [
        "closed 4,811 connections in their handshake in the last 60 s: 4,799 timed out,"
        " 12 malformed"
    ]
    log.close()  # idempotent: nothing more to say
    assert len(lines) == 3


async def test_summary_comes_when_the_interval_ends(lines: list[str]) -> None:
    log = summary(interval=0.05)
    try:
        for _ in range(3):
            log.warn("malformed", "bad %d", 1)
        assert lines == ["bad 1"]
        await wait_for(lambda: len(lines) == 2)
        assert lines[1] == "closed 2 connections in their handshake in the last 0.05 s: 2 malformed"
    finally:
        log.close()


class ManualTimers:
    """Stands in for the loop's ``call_later``: the test ends each interval by hand."""

    def __init__(self) -> None:
        self.pending: list[asyncio.TimerHandle] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(0.0, callback, (), asyncio.get_running_loop())
        self.pending.append(handle)
        return handle

    def end_interval(self) -> None:
        (handle,) = [h for h in self.pending if not h.cancelled()]
        self.pending.clear()
        handle._run()


def manual_summary(timers: ManualTimers) -> LogSummary:
    return LogSummary(
        logging.getLogger(LOGGER),
        cast(asyncio.AbstractEventLoop, timers),
        verb="closed",
        what="connections in their handshake",
        interval=10.0,
    )


async def test_a_sustained_flood_costs_one_line_per_interval(lines: list[str]) -> None:
    timers = ManualTimers()
    log = manual_summary(timers)
    log.warn("timed out", "first")
    for _ in range(3):
        # Counted kinds stay muted into the next interval: no second "first".
        for _ in range(100):
            log.warn("timed out", "first")
        timers.end_interval()
    assert lines == [
        "first",
        *["closed 100 connections in their handshake in the last 10 s: 100 timed out"] * 3,
    ]


async def test_a_kind_quiet_for_an_interval_is_logged_at_once_again(lines: list[str]) -> None:
    timers = ManualTimers()
    log = manual_summary(timers)
    log.warn("evicted", "evicted %s", "a")
    log.warn("evicted", "evicted %s", "b")
    timers.end_interval()  # one counted: summed up, and muted for one more interval
    timers.end_interval()  # a quiet interval: unmuted, and no timer left
    assert timers.pending == []
    log.warn("evicted", "evicted %s", "c")
    assert lines == [
        "evicted a",
        "closed 1 connections in their handshake in the last 10 s: 1 evicted",
        "evicted c",
    ]
    log.close()

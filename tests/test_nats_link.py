from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

import pytest
from tests.proxy import TcpProxy

from flotilla.errors import ConfigError, FailedPrecondition, Unavailable
from flotilla.nats_link import NatsLink
from flotilla.testing.cluster import wait_for


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_url_that_is_not_nats_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a NATS URL"):
        NatsLink("http://127.0.0.1:4222", what="event backend")


async def test_the_password_of_the_url_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    url = f"nats://ada:hunter2@127.0.0.1:{_closed_port()}"
    link = NatsLink(url, what="event backend", timeout=0.5)
    with (
        caplog.at_level(logging.DEBUG, logger="flotilla.nats"),
        pytest.raises(Unavailable) as raised,
    ):
        await link.connection()
    assert "hunter2" not in raised.value.message
    assert "ada:***@127.0.0.1" in raised.value.message
    assert all("hunter2" not in record.getMessage() for record in caplog.records)
    await link.aclose()
    with pytest.raises(FailedPrecondition):
        await link.connection()


def _nats_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "flotilla.nats" and r.levelno == level
    ]


async def test_a_refused_port_is_one_warning_however_often_it_is_tried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = NatsLink(f"nats://127.0.0.1:{_closed_port()}", what="event backend", timeout=0.5)
    with caplog.at_level(logging.DEBUG, logger="flotilla.nats"):
        for _ in range(3):  # every caller tries again (each try: two connects)
            with pytest.raises(Unavailable):
                await link.connection()
    await link.aclose()
    warnings = _nats_lines(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "Connect call failed" in warnings[0]
    assert len(_nats_lines(caplog, logging.DEBUG)) >= 2  # the others, as details


async def test_an_outage_is_one_warning_then_one_line_when_it_ends(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(nats_url)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 4222) as proxy:
        link = NatsLink(f"nats://127.0.0.1:{proxy.port}", what="registry", timeout=1.0)
        try:
            with caplog.at_level(logging.DEBUG, logger="flotilla.nats"):
                await link.connection()
                for streak in (1, 2):  # a second outage is a streak of its own
                    await proxy.cut()
                    tries = len(_nats_lines(caplog, logging.DEBUG))
                    await wait_for(lambda t=tries: len(_nats_lines(caplog, logging.DEBUG)) >= t + 3,
                                   timeout=10)  # fmt: skip
                    await proxy.restore()
                    await wait_for(lambda n=streak: len(_nats_lines(caplog, logging.INFO)) == n,
                                   timeout=10)  # fmt: skip
        finally:
            await link.aclose()
    warnings = _nats_lines(caplog, logging.WARNING)
    assert len(warnings) == 2, warnings  # one per outage, not one per failed reconnect
    assert all(f"127.0.0.1:{proxy.port}" in line for line in warnings)
    assert all("reconnected to NATS" in line for line in _nats_lines(caplog, logging.INFO))

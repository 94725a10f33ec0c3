from __future__ import annotations

import logging
import socket

import pytest

from flotilla.errors import ConfigError, FailedPrecondition, Unavailable
from flotilla.nats_link import NatsLink


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

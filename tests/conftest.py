"""Fixtures every test directory may use: the real servers (see ``tests/servers.py``)."""

from __future__ import annotations

import pytest
from tests.servers import NATS, POSTGRES, require


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The URL of a NATS server with JetStream; skips (fails under CI=true) if none answers."""
    return require(NATS)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a PostgreSQL database; skips (fails under CI=true) if none answers."""
    return require(POSTGRES)

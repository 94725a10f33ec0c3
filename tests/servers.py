"""The real servers some tests use (PostgreSQL here), found by URL, skipped or failed if absent.

Defaults are the servers of this machine and of CI; the environment overrides them:

* ``FLOTILLA_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
* ``FLOTILLA_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

When ``CI=true`` a missing server is a test FAILURE (CI must run every test);
elsewhere such tests are skipped with a message naming the server.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

__all__ = ["POSTGRES_URL", "REDIS_URL", "postgres_execute", "postgres_schema", "require_server"]

POSTGRES_URL = os.environ.get(
    "FLOTILLA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

REDIS_URL = os.environ.get("FLOTILLA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_server(name: str, url: str, variable: str = "FLOTILLA_TEST_POSTGRES_URL") -> None:
    """Skip (or, under CI, fail) the test unless something listens at ``url``'s host and port."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError as exc:
        message = f"{name} is not running at {host}:{port} ({exc}); {variable} names another"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """``(url, schema)``: the test server's URL and a fresh schema, dropped after the test."""
    require_server("PostgreSQL", POSTGRES_URL)
    schema = f"flotilla_test_{secrets.token_hex(6)}"
    asyncio.run(postgres_execute(f'CREATE SCHEMA "{schema}"'))
    try:
        yield POSTGRES_URL, schema
    finally:
        asyncio.run(postgres_execute(f'DROP SCHEMA "{schema}" CASCADE'))


async def postgres_execute(statement: str) -> None:
    """Run one statement on the test server (as its own connection, outside any test's)."""
    import asyncpg

    dsn = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()

"""The real servers some tests need (NATS with JetStream, PostgreSQL, Redis), found or reported.

Each server has a default URL on this machine, overridable by environment::

    FLOTILLA_TEST_NATS_URL       nats://127.0.0.1:4222
    FLOTILLA_TEST_POSTGRES_URL   postgresql://postgres@127.0.0.1:5432/test
    FLOTILLA_TEST_REDIS_URL      redis://127.0.0.1:6379/0

A test that needs one takes its fixture (``nats_url``, ``postgres_url`` in
``tests/conftest.py``; Redis: ``redis_url`` in ``tests/gateway/test_ratelimit.py``).
The fixture probes the server's TCP port once per session.  When it does not
answer, the test is skipped with a message naming the server and how to start
it; under ``CI=true`` it FAILS instead, because CI starts every one of them
(``.ci/run``) and a silent skip there would hide a backend that was never tested.

Isolation: tests share one server, so each names what it creates with
:func:`unique_name` (streams, buckets, subjects, schemas) and deletes it after.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

__all__ = [
    "NATS",
    "POSTGRES",
    "POSTGRES_URL",
    "REDIS",
    "REDIS_URL",
    "Server",
    "delete_bucket",
    "delete_streams",
    "nats_prefix",
    "postgres_execute",
    "postgres_schema",
    "require",
    "require_server",
    "unique_name",
]

PROBE_TIMEOUT = 1.0
CLEANUP_TIMEOUT = 15.0


class Server(msgspec.Struct, frozen=True, kw_only=True):
    """One real server a test may need: where it is by default and how to start it."""

    name: str
    env: str
    """The environment variable that overrides ``default_url``."""
    default_url: str
    default_port: int
    start: str
    """The command that starts it on this machine (as root)."""

    @property
    def url(self) -> str:
        return os.environ.get(self.env) or self.default_url


NATS = Server(
    name="NATS (with JetStream)",
    env="FLOTILLA_TEST_NATS_URL",
    default_url="nats://127.0.0.1:4222",
    default_port=4222,
    start=(
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server --"
        " -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
    ),
)

POSTGRES = Server(
    name="PostgreSQL",
    env="FLOTILLA_TEST_POSTGRES_URL",
    default_url="postgresql://postgres@127.0.0.1:5432/test",
    default_port=5432,
    start="pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
)

REDIS = Server(
    name="Redis",
    env="FLOTILLA_TEST_REDIS_URL",
    default_url="redis://127.0.0.1:6379/0",
    default_port=6379,
    start=(
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
        " --dir /var/lib/redis --logfile /var/log/redis/ci.log"
    ),
)

POSTGRES_URL = POSTGRES.url
REDIS_URL = REDIS.url
_BY_NAME = {server.name.split(" ")[0]: server for server in (NATS, POSTGRES, REDIS)}


def answers(url: str, default_port: int) -> bool:
    """Whether something accepts a TCP connection at ``url``'s host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=PROBE_TIMEOUT
        ):
            return True
    except OSError:
        return False


def require(server: Server) -> str:
    """``server``'s URL if it answers; otherwise skip the test (fail it under ``CI=true``)."""
    url = server.url
    if answers(url, server.default_port):
        return url
    message = (
        f"{server.name} is not answering at {url}; start it with `{server.start}`"
        f" or point {server.env} at one"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs every server: {message}", pytrace=False)
    pytest.skip(message)


def require_server(name: str, url: str, variable: str | None = None) -> None:
    """:func:`require` for a server known by its name ("PostgreSQL", "Redis") and a URL."""
    known = _BY_NAME[name]
    require(msgspec.structs.replace(known, default_url=url, env=variable or known.env))


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """``(url, schema)``: the test server's URL and a fresh schema, dropped after the test."""
    url = require(POSTGRES)
    schema = f"flotilla_test_{secrets.token_hex(6)}"
    asyncio.run(postgres_execute(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url, schema
    finally:
        asyncio.run(postgres_execute(f'DROP SCHEMA "{schema}" CASCADE'))


async def postgres_execute(statement: str) -> None:
    """Run one statement on the test server (as its own connection, outside any test's)."""
    import asyncpg  # here: only the tests that need PostgreSQL need asyncpg

    dsn = POSTGRES.url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def unique_name(prefix: str = "T") -> str:
    """A name no other test (or run) uses: ``<prefix>_<12 hex>``, valid in NATS and SQL."""
    return f"{prefix}_{secrets.token_hex(6)}"


async def delete_bucket(url: str, bucket: str) -> None:
    """Delete a test's KV bucket, if it was made."""
    await delete_streams(url, [f"KV_{bucket}"])


async def delete_streams(url: str, streams: list[str]) -> None:
    """Delete a test's JetStream streams, those that were made."""
    import nats  # here: only the tests that need NATS need nats-py
    import nats.js.errors

    # Bounded throughout: a clean-up must never hang a test run.
    async with asyncio.timeout(CLEANUP_TIMEOUT):
        client = await nats.connect(url, max_reconnect_attempts=1, connect_timeout=2)
        try:
            js = client.jetstream()
            for stream in streams:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(stream)
        finally:
            await client.close()


def nats_prefix(tmp_path: Path) -> str:
    """The event stream prefix of the test owning ``tmp_path`` (the same for both its handles)."""
    return "T" + hashlib.blake2b(str(tmp_path).encode(), digest_size=6).hexdigest()

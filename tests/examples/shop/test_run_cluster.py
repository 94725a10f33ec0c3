"""`flotilla run examples/shop` on the cluster engines: NATS registry and events, PostgreSQL.

The same system file as the embedded run (test_run.py), switched by three
options.  Each test's names are its own (registry bucket, event stream prefix,
schema prefix), and what it made on the servers is removed after.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from shop.invariants import admin_context, check_invariants
from shop.journey import Journey
from tests.examples.shop.test_run import (
    SERVICES,
    free_port,
    shop_running,
    wait_for_gateway,
)
from tests.servers import (
    NATS,
    POSTGRES,
    delete_streams,
    postgres_execute,
    require,
    unique_name,
)

from flotilla import Node, NodeConfig
from flotilla.events.jetstream_names import dlq_stream


@dataclass(frozen=True)
class Cluster:
    """The URLs of one test's share of the servers."""

    registry: str
    events: str
    database: str
    schemas: list[str]
    """The schema of each service, as ``flotilla run`` names them from the database URL."""


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    nats_url, postgres_url = require(NATS), require(POSTGRES)
    tag = unique_name("shop").lower()
    bucket, prefix = f"{tag}_registry", tag.upper()
    yield Cluster(
        registry=f"{nats_url}?bucket={bucket}",
        events=f"{nats_url}?prefix={prefix}",
        database=f"{postgres_url}?schema={tag}",
        schemas=[f"{tag}_{service}" for service in sorted(SERVICES)],
    )
    asyncio.run(delete_streams(nats_url, [prefix, dlq_stream(prefix), f"KV_{bucket}"]))
    for schema in sorted(SERVICES):
        asyncio.run(postgres_execute(f'DROP SCHEMA IF EXISTS "{tag}_{schema}" CASCADE'))


async def settled_violations(node: Node) -> list[str]:
    """The invariants' violations once no order is pending (the last seen, after 30 s)."""
    admin = admin_context(node)
    async with asyncio.timeout(30):
        while found := await check_invariants(admin):  # noqa: ASYNC110 - other processes
            await asyncio.sleep(0.1)
    return found


async def schemas_present(names: list[str]) -> list[str]:
    import asyncpg

    connection = await asyncpg.connect(require(POSTGRES))
    try:
        rows = await connection.fetch(
            "SELECT DISTINCT table_schema FROM information_schema.tables"
            " WHERE table_schema = ANY($1::text[]) AND table_name = 'flotilla_outbox'",
            names,
        )
    finally:
        await connection.close()
    return sorted(row["table_schema"] for row in rows)


def test_the_shop_runs_on_nats_and_postgresql(tmp_path: Path, cluster: Cluster) -> None:
    port = free_port()
    options = ["--registry", cluster.registry, "--events", cluster.events]
    options += ["--database", cluster.database]
    with shop_running(tmp_path, port, args=options) as (settings, process):

        async def journey() -> list[str]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                await wait_for_gateway(http)
                steps = Journey(http, Console(file=io.StringIO()))
                await steps.run()  # raises JourneyError on any unexpected answer
            outcomes = {(o["status"], o["cancel_reason"]) for o in steps.orders}
            assert outcomes == {
                ("cancelled", "user_cancelled"),  # the good order, confirmed then cancelled
                ("cancelled", "payment_declined"),
                ("cancelled", "out_of_stock"),
            }
            config = NodeConfig(registry=cluster.registry, secret=settings.secret)
            async with Node(config=config) as node:
                return await settled_violations(node)

        assert asyncio.run(journey()) == []
        # Each service's tables in a schema of its own, on the one server database.
        assert asyncio.run(schemas_present(cluster.schemas)) == cluster.schemas
        # The other commands find the system given the same variable.
        env = dict(os.environ, FLOTILLA_REGISTRY=cluster.registry)
        listed = subprocess.run(
            [sys.executable, "-m", "flotilla", "ps", "--data-dir", str(tmp_path / "data")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert all(service in listed for service in SERVICES), listed
    assert process.returncode == 0

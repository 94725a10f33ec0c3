"""The node's data parts: each service's database opened with the node, a relay for each,
readiness that an unreachable database fails without stopping the node."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import func, insert, select
from tests.data.conftest import items, metadata
from tests.data.recording import RecordingBackend
from tests.servers import POSTGRES_URL, postgres_execute, require_server

from flotilla import Context, Health, Node, NodeConfig, Service, Unavailable, rpc
from flotilla.data import Backoff, Database, DatabasePolicy, RelayPolicy, check_databases
from flotilla.data.parts import DatabasesPart, data_parts
from flotilla.data.relay import OutboxRelay
from flotilla.data.schema import outbox
from flotilla.errors import ConfigError
from flotilla.registry import MemoryRegistry
from flotilla.testing import wait_for

DOWN = "postgresql://app:hunter2@127.0.0.1:1/shop"


class Placed(msgspec.Struct):
    name: str


class Orders(Service, name="orders"):
    db = Database(
        metadata=metadata,
        policy=DatabasePolicy(connect_timeout=1.0, reconnect=Backoff(base=0.05, max=0.1)),
    )

    @rpc
    async def place(self, ctx: Context, name: str) -> int:
        async with self.db.transaction(ctx) as tx:
            await tx.session.execute(insert(items).values(name=name))
            tx.emit("order.placed", Placed(name=name), key=name)
        async with self.db.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(items)) or 0)


class Billing(Service, name="billing"):
    db = Database()


async def test_a_service_emits_and_the_node_publishes(tmp_path: Path) -> None:
    backend = RecordingBackend()
    config = NodeConfig(data_dir=str(tmp_path))
    async with Node(Orders(), config=config, events=backend) as node:
        assert await node.call("orders.place", name="teapot") == 1
        await wait_for(lambda: len(backend.published) == 1, timeout=2.0)
        instance = node.instances[0]
    envelope = backend.published[0]
    assert (envelope.topic, envelope.key, envelope.source) == ("order.placed", "teapot", "orders")
    assert envelope.instance == instance.id
    assert envelope.headers.request_id  # the call's request id travels with its events
    assert msgspec.msgpack.decode(envelope.payload, type=Placed) == Placed(name="teapot")
    assert (tmp_path / "orders.db").exists()  # the embedded default: a file per service


async def test_without_an_event_backend_events_wait_in_the_outbox() -> None:
    service = Orders()
    async with Node(service) as node:  # no data_dir: the database lives in memory
        await node.call("orders.place", name="teapot")
        async with service.db.connect() as conn:
            waiting = await conn.scalar(select(func.count()).select_from(outbox))
    assert waiting == 1


async def test_an_unreachable_database_makes_the_service_unhealthy_not_the_node_fail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = MemoryRegistry()
    service = Orders()
    config = NodeConfig(databases={"orders": DOWN})
    with caplog.at_level(logging.WARNING, "flotilla.data"):
        async with Node(service, config=config, registry=registry) as node:
            [instance] = await registry.list("orders")
            assert instance.health is Health.UNHEALTHY  # registered, but not to be picked
            with pytest.raises(Unavailable, match=r"postgresql\+asyncpg://app:\*\*\*@127.0.0.1:1"):
                await check_databases(service)
            assert node.instances[0].id == instance.id
    assert "127.0.0.1:1/shop" in caplog.text
    assert "hunter2" not in caplog.text


async def test_a_database_that_comes_up_later_makes_the_service_healthy() -> None:
    require_server("PostgreSQL", POSTGRES_URL)
    name = f"flotilla_late_{secrets.token_hex(4)}"
    registry = MemoryRegistry()
    config = NodeConfig(databases={"orders": f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"})
    try:
        async with Node(Orders(), config=config, registry=registry):
            [instance] = await registry.list("orders")
            assert instance.health is Health.UNHEALTHY  # no such database yet
            await postgres_execute(f'CREATE DATABASE "{name}"')
            async with asyncio.timeout(10):
                while instance.health is not Health.HEALTHY:
                    await asyncio.sleep(0.05)
                    [instance] = await registry.list("orders")
    finally:
        await postgres_execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_one_url_for_every_database_of_a_node_is_refused() -> None:
    with pytest.raises(ConfigError, match="FLOTILLA_DATABASE_URL names one database"):
        Node(Orders(), Billing(), config=NodeConfig(database="sqlite://"))


def test_a_bad_url_fails_when_the_node_is_made() -> None:
    with pytest.raises(ConfigError, match="unknown scheme"):
        Node(Orders(), config=NodeConfig(databases={"orders": "oracle://db/x"}))


def test_per_service_urls_and_the_single_url() -> None:
    part = DatabasesPart(
        [Orders(), Billing()],
        data_dir="/srv",
        database=None,
        databases={"billing": "postgresql://b@h/billing"},
    )
    assert [url.database for url in part._urls] == ["/srv/orders.db", "billing"]
    single = DatabasesPart([Orders()], data_dir="/srv", database="sqlite://", databases={})
    assert single._urls[0].database is None  # memory


def test_a_relay_per_database_only_with_an_event_backend() -> None:
    services = [Orders(), Billing()]
    options = {"data_dir": None, "database": None, "databases": {}}
    with_events = data_parts(services, events=RecordingBackend(), **options)  # type: ignore[arg-type]
    assert [type(part) for part in with_events] == [DatabasesPart, OutboxRelay, OutboxRelay]
    without = data_parts(services, events=None, **options)  # type: ignore[arg-type]
    assert [type(part) for part in without] == [DatabasesPart]


def test_no_database_no_parts() -> None:
    class Plain(Service, name="plain"):
        pass

    assert data_parts([Plain()], data_dir=None, database=None, databases={}, events=None) == []


async def test_the_nodes_relay_policy_reaches_its_relays() -> None:
    policy = RelayPolicy(poll=0.5, batch=3)
    node = Node(Orders(), config=NodeConfig(relay=policy), events=RecordingBackend())
    [relay] = [part for part in node.parts if isinstance(part, OutboxRelay)]
    assert relay.policy is policy

"""`flotilla run examples/shop`: six processes on the embedded backends, an order through them.

The saga here crosses real processes: each service's database is an SQLite
file in the data directory, events go through the embedded SQLite log, and
this test process calls in as an outside client (as the gateway will).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from shop.catalog import Catalog
from shop.invariants import admin_context, check_invariants
from shop.orders import ItemRequest, Orders
from shop.users import Users

from flotilla import Node, NodeConfig
from flotilla.context import Context
from flotilla.headers import Headers, Principal
from flotilla.registry import open_registry
from flotilla.runtime.settings import Settings

SHOP = Path(__file__).resolve().parents[3] / "examples" / "shop"
SERVICES = {"users", "catalog", "inventory", "orders", "payments", "notifications"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Settings]:
    data = tmp_path / "data"
    env = dict(os.environ, FLOTILLA_DATA_DIR=str(data))
    settings = Settings.from_env(env)  # makes the secret first: the system reads the same one
    log = tmp_path / "run.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "flotilla", "run", str(SHOP), "--no-status", "--data-dir", data],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield settings
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            print(log.read_text()[-3000:])  # shown when the test fails
    assert process.returncode == 0


async def wait_for_services(settings: Settings) -> None:
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(60):
            while {i.service for i in await registry.list()} != SERVICES:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        await registry.aclose()


async def test_the_shop_runs_and_confirms_an_order(running: Settings) -> None:
    await wait_for_services(running)
    async with Node(config=NodeConfig(registry=running.registry, secret=running.secret)) as node:
        admin = admin_context(node)
        product = await admin.client(Catalog).create(
            name="teapot", price_cents=1500, category="tea", initial_stock=3
        )
        users = node.client(Users)
        await users.create(email="ada@example.com", password="correct horse", name="Ada")
        claims = await users.authenticate(email="ada@example.com", password="correct horse")
        ada = Context(node.caller, Headers(principal=Principal(claims.sub, ())))
        accepted = await ada.client(Orders).create(
            items=[ItemRequest(product.id, 2)], card_token="tok_ok"
        )

        # Settled: no order pending, every invariant holds (a pending order is a violation).
        async with asyncio.timeout(30):
            while await check_invariants(admin):  # noqa: ASYNC110 - state in other processes
                await asyncio.sleep(0.05)
        assert (await ada.client(Orders).get(id=accepted.id)).status == "confirmed"

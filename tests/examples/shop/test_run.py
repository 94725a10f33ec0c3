"""`flotilla run examples/shop`: six processes and the gateway on the embedded backends.

The saga here crosses real processes: each service's database is an SQLite
file in the data directory, events go through the embedded SQLite log.  This
test process calls in twice: as an RPC client (a node of the system), and as
an outside client over HTTP through the gateway that `flotilla run` started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
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


def free_port() -> int:
    """A port nobody listens on now (the gateway binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def gateway_port() -> int:
    return free_port()


@contextlib.contextmanager
def shop_running(
    tmp_path: Path, port: int, *, args: Sequence[str] = (), **environment: str
) -> Iterator[tuple[Settings, subprocess.Popen[bytes]]]:
    """`flotilla run examples/shop [args]` with its data in ``tmp_path``, the gateway on
    ``port`` and ``environment`` added; stopped by SIGINT after (its log's tail printed).
    Yields the system's settings and the `flotilla run` process (its return code is set
    after)."""
    data = tmp_path / "data"
    env = dict(os.environ, FLOTILLA_DATA_DIR=str(data), FLOTILLA_GATEWAY_PORT=str(port))
    env.update(environment)
    env.pop("SHOP_JWT_SECRET", None)  # the gateway's key: generated in the data directory
    settings = Settings.from_env(env)  # makes the secret first: the system reads the same one
    log = tmp_path / "run.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "flotilla", "run", str(SHOP)),
                *("--no-status", "--data-dir", str(data), *args),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield settings, process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        finally:
            print(log.read_text()[-4000:])  # shown when the test fails


@pytest.fixture
def running(tmp_path: Path, gateway_port: int) -> Iterator[Settings]:
    with shop_running(tmp_path, gateway_port) as (settings, process):
        yield settings
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


async def wait_for_gateway(http: httpx.AsyncClient) -> None:
    """Until ``/readyz`` says the gateway has bound its routes (it answers 503 before)."""
    async with asyncio.timeout(60):
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.1)


async def test_the_shop_answers_over_http(running: Settings, gateway_port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway_port}") as http:
        await wait_for_gateway(http)
        admin = await bearer(http, "admin@shop.example", "admin-demo-password")
        product = await http.post(
            "/api/products",
            json={"name": "kettle", "price_cents": 2500, "category": "tea", "initial_stock": 2},
            headers=admin,
        )
        assert product.status_code == 201, product.text
        account = {"email": "bob@example.com", "password": "correct horse", "name": "Bob"}
        assert (await http.post("/api/users", json=account)).status_code == 201
        bob = await bearer(http, account["email"], account["password"])
        items = [{"product_id": product.json()["id"], "quantity": 1}]
        placed = await http.post(
            "/api/orders", json={"items": items, "card_token": "tok_ok"}, headers=bob
        )
        assert placed.status_code == 202, placed.text
        path = f"/api/orders/{placed.json()['id']}"
        async with asyncio.timeout(30):
            order = await http.get(path, headers=bob)
            while order.json()["status"] == "pending":
                await asyncio.sleep(0.05)
                order = await http.get(path, headers=bob)
        assert order.json()["status"] == "confirmed"
        stock = (await http.get(f"/api/products/{product.json()['id']}/stock")).json()
        assert (stock["available"], stock["reserved"], stock["sold"]) == (1, 0, 1)


async def bearer(http: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    answer = await http.post("/api/auth/token", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}

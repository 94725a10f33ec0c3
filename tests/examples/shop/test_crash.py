"""`flotilla run examples/shop` survives kill -9 of its services while orders flow.

Orders are placed over HTTP through the gateway (a few users, a few products,
one of them nearly out of stock, some declined cards) while the test SIGKILLs
the inventory process, then payments, then orders; the supervisor restarts
each.  Once quiet, every order the gateway accepted (202) exists and is
terminal, and the shop's invariants hold: a kill between a database commit and
an event's delivery loses nothing, it only delays.

Delivery is made quick through ``FLOTILLA_DELIVERY`` (a short ``ack_wait``, so
an event whose consumer died is handed out again within seconds, and enough
deliveries that an outage of a peer never dead-letters one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from shop.invariants import admin_context, check_invariants
from tests.examples.shop.test_run import bearer, free_port, shop_running, wait_for_gateway

from flotilla import Node, NodeConfig
from flotilla.cli.status_view import instance_pid
from flotilla.registry import open_registry
from flotilla.runtime.settings import Settings

DELIVERY = {"ack_wait": 2.0, "backoff_base": 0.1, "backoff_max": 0.5, "max_deliveries": 100}
VICTIMS = ("inventory", "payments", "orders")
TERMINAL = {"confirmed", "cancelled"}


@dataclass
class Shop:
    settings: Settings
    base_url: str


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    port = free_port()
    with shop_running(tmp_path, port, FLOTILLA_DELIVERY=json.dumps(DELIVERY)) as (settings, _):
        yield Shop(settings, f"http://127.0.0.1:{port}")


@dataclass
class Customer:
    headers: dict[str, str]
    accepted: list[str] = field(default_factory=list)
    """Ids of the orders the gateway answered 202 for."""


@dataclass
class Tally:
    refused: dict[int, int] = field(default_factory=dict)
    """Answers other than 202 by status (a service down: 5xx), or -1 for no answer."""


async def place_orders(
    http: httpx.AsyncClient, customers: list[Customer], products: list[int], tally: Tally
) -> None:
    """Place orders at about 25 a second until cancelled; round-robin over users,
    products and cards (every fifth card is declined)."""
    for n in itertools.count():
        customer = customers[n % len(customers)]
        body = {
            "items": [{"product_id": products[n % len(products)], "quantity": 1 + n % 2}],
            "card_token": "tok_decline" if n % 5 == 4 else "tok_ok",
        }
        try:
            answer = await http.post("/api/orders", json=body, headers=customer.headers)
        except httpx.TransportError:
            tally.refused[-1] = tally.refused.get(-1, 0) + 1
        else:
            if answer.status_code == 202:
                customer.accepted.append(answer.json()["id"])
            else:
                tally.refused[answer.status_code] = tally.refused.get(answer.status_code, 0) + 1
        await asyncio.sleep(0.04)


async def pid_of(settings: Settings, service: str, other_than: int | None = None) -> int:
    """The pid of a live instance of ``service`` (polled until one other than
    ``other_than`` is registered: the killed one's lease may linger)."""
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(30):
            while True:
                for instance in await registry.list():
                    pid = instance_pid(instance)
                    if instance.service == service and pid not in (None, other_than):
                        return pid
                await asyncio.sleep(0.1)
    finally:
        await registry.aclose()


async def kill_and_await_restart(settings: Settings, service: str) -> None:
    victim = await pid_of(settings, service)
    os.kill(victim, signal.SIGKILL)
    await pid_of(settings, service, other_than=victim)


async def set_up(http: httpx.AsyncClient) -> tuple[list[Customer], list[int]]:
    admin = await bearer(http, "admin@shop.example", "admin-demo-password")
    products = []
    for name, stock in (("kettle", 400), ("teapot", 400), ("rare cup", 6)):
        made = await http.post(
            "/api/products",
            json={"name": name, "price_cents": 1200, "category": "tea", "initial_stock": stock},
            headers=admin,
        )
        assert made.status_code == 201, made.text
        products.append(made.json()["id"])
    customers = []
    for who in ("ada", "bob", "cy"):
        account = {"email": f"{who}@example.com", "password": "correct horse", "name": who}
        assert (await http.post("/api/users", json=account)).status_code == 201
        customers.append(Customer(await bearer(http, account["email"], account["password"])))
    return customers, products


async def settled(http: httpx.AsyncClient, customers: list[Customer]) -> dict[str, int]:
    """Wait until every accepted order is terminal; count them by status."""
    counts: dict[str, int] = {}
    async with asyncio.timeout(60):
        for customer in customers:
            for order_id in customer.accepted:
                while True:
                    answer = await http.get(f"/api/orders/{order_id}", headers=customer.headers)
                    assert answer.status_code in (200, 503), answer.text
                    status = answer.json().get("status") if answer.status_code == 200 else None
                    if status in TERMINAL:
                        counts[status] = counts.get(status, 0) + 1
                        break
                    await asyncio.sleep(0.1)
    return counts


async def test_orders_survive_kill_9_of_inventory_payments_and_orders(shop: Shop) -> None:
    tally = Tally()
    async with httpx.AsyncClient(base_url=shop.base_url, timeout=20) as http:
        await wait_for_gateway(http)
        customers, products = await set_up(http)
        async with asyncio.TaskGroup() as group:
            orders = group.create_task(place_orders(http, customers, products, tally))
            for victim in VICTIMS:
                await asyncio.sleep(1.5)  # orders in flight before each kill
                await kill_and_await_restart(shop.settings, victim)
            await asyncio.sleep(1.5)  # and after the last restart
            orders.cancel()

        accepted = sum(len(customer.accepted) for customer in customers)
        assert accepted >= 50, tally.refused
        counts = await settled(http, customers)
        print(f"accepted {accepted}, settled {counts}, refused {tally.refused}")
        # Every accepted order exists and is terminal; declines and the rare cup cancel some.
        assert sum(counts.values()) == accepted
        assert counts.get("confirmed", 0) > 0, counts
        assert counts.get("cancelled", 0) > 0, counts

    async with Node(
        config=NodeConfig(registry=shop.settings.registry, secret=shop.settings.secret)
    ) as node:
        # Polled with a deadline (the state is in other processes); the last answer is shown.
        deadline = asyncio.get_running_loop().time() + 30
        while violations := await check_invariants(admin_context(node)):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert violations == []

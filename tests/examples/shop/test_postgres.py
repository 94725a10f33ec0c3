"""The saga on PostgreSQL: each service's database a schema of its own on the test server."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from shop.catalog import Catalog
from shop.inventory import MAX_STOCK, Inventory
from shop.orders import MAX_QUANTITY, ItemRequest, Orders
from tests.examples.shop.kit import SERVICES, running_shop
from tests.servers import POSTGRES_URL, postgres_execute, require_server

from flotilla import NotFound


@pytest.fixture
def schemas() -> Iterator[dict[str, str]]:
    """A fresh schema per service, dropped after the test."""
    require_server("PostgreSQL", POSTGRES_URL)
    tag = secrets.token_hex(4)
    names = {service.name: f"shop_{service.name}_{tag}" for service in SERVICES}
    for schema in names.values():
        asyncio.run(postgres_execute(f'CREATE SCHEMA "{schema}"'))
    try:
        yield names
    finally:
        for schema in names.values():
            asyncio.run(postgres_execute(f'DROP SCHEMA "{schema}" CASCADE'))


async def test_the_saga_runs_on_postgresql(schemas: dict[str, str]) -> None:
    def where(service: str) -> tuple[str, dict[str, Any]]:
        settings = {"search_path": schemas[service]}
        return POSTGRES_URL, {"connect_args": {"server_settings": settings}}

    async with running_shop(databases=where) as shop:
        teapot = await shop.product(stock=5, price_cents=900)
        ada = await shop.signup()
        good = await shop.order(ada, (teapot, 2), key="first")
        declined = await shop.order(ada, (teapot, 1), card="tok_decline")
        too_many = await shop.order(ada, (teapot, 9))
        await shop.settled(timeout=20)  # the declined unit is back: 3 of 5 left
        racing = await asyncio.gather(*(shop.order(ada, (teapot, 1)) for _ in range(6)))
        await shop.settled(timeout=20)
        await ada.client(Orders).cancel(id=good)
        snapshot = await shop.settled(timeout=20)

        statuses = {o.id: (o.status, o.cancel_reason) for o in snapshot.orders}
        assert statuses[good] == ("cancelled", "user_cancelled")
        assert statuses[declined] == ("cancelled", "payment_declined")
        assert statuses[too_many] == ("cancelled", "out_of_stock")
        # The good order held 2 of the 5 until its cancel: 3 of the racing 6 got one.
        assert sorted(statuses[o][0] for o in racing).count("confirmed") == 3
        assert (await shop.payment(ada, good)).status == "refunded"
        stock = await shop.stock(teapot)
        assert (stock.available, stock.reserved, stock.sold) == (2, 0, 3)


async def test_64_bit_ids_stock_and_totals_fit_on_postgresql(schemas: dict[str, str]) -> None:
    """PostgreSQL's INTEGER is 32-bit: stock past 2**31 units, a total past 2**31 cents or an
    id past 2**31 must neither overflow nor fail (they were a 500 on INTEGER columns)."""

    def where(service: str) -> tuple[str, dict[str, Any]]:
        settings = {"search_path": schemas[service]}
        return POSTGRES_URL, {"connect_args": {"server_settings": settings}}

    async with running_shop(databases=where) as shop:
        dear = await shop.product(stock=MAX_STOCK, price_cents=100_000_000)
        for _ in range(3):
            await shop.admin.client(Inventory).add_stock(product_id=dear, add=MAX_STOCK)
        ada = await shop.signup()
        lines = [ItemRequest(dear, MAX_QUANTITY)]
        order = await ada.client(Orders).create(items=lines, card_token="tok_ok")
        far = 2**40
        with pytest.raises(NotFound):
            await shop.admin.client(Catalog).get(id=far)
        with pytest.raises(NotFound):
            await shop.get(ada, far)
        with pytest.raises(NotFound):
            await shop.stock(far)
        await shop.settled(timeout=20)
        placed = await shop.get(ada, order.id)
        assert placed.total_cents == 100_000_000 * MAX_QUANTITY
        assert (placed.status, placed.cancel_reason) == ("cancelled", "payment_declined")
        assert (await shop.payment(ada, order.id)).amount_cents == placed.total_cents
        assert (await shop.stock(dear)).available == 4 * MAX_STOCK

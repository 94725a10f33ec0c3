"""Inventory: reading and adding stock; no oversell however many orders race."""

from __future__ import annotations

import asyncio
import time

import pytest
from shop.inventory import Inventory
from tests.examples.shop.kit import ShopKit

from flotilla import InvalidArgument, NotFound, PermissionDenied


async def test_admins_add_stock_to_what_is_available(shop: ShopKit) -> None:
    teapot = await shop.product(stock=3)
    stock = await shop.admin.client(Inventory).add_stock(product_id=teapot, add=5)
    assert (stock.available, stock.reserved, stock.sold, stock.added) == (8, 0, 0, 8)
    ada = await shop.signup()
    with pytest.raises(PermissionDenied):
        await ada.client(Inventory).add_stock(product_id=teapot, add=5)
    with pytest.raises(InvalidArgument, match=r"^add: must be at least 1, not 0"):
        await shop.admin.client(Inventory).add_stock(product_id=teapot, add=0)
    with pytest.raises(NotFound, match="no stock of product 99"):
        await shop.admin.client(Inventory).add_stock(product_id=99, add=1)
    with pytest.raises(NotFound):
        await shop.stock(99)


async def test_every_stock_level_is_listed_for_admins_only(shop: ShopKit) -> None:
    products = [await shop.product(stock=n) for n in (1, 2, 3)]
    levels = await shop.admin.client(Inventory).levels(after_id=products[0], limit=5)
    assert [(s.product_id, s.available) for s in levels] == [(products[1], 2), (products[2], 3)]
    with pytest.raises(PermissionDenied):
        await (await shop.signup()).client(Inventory).levels()


async def test_200_orders_at_once_for_50_units_sell_exactly_50(shop: ShopKit) -> None:
    teapot = await shop.product(stock=50)
    buyers = [await shop.signup(f"buyer {n}") for n in range(10)]
    started = time.monotonic()
    await asyncio.gather(*(shop.order(buyers[n % 10], (teapot, 1)) for n in range(200)))
    snapshot = await shop.settled(timeout=20)
    elapsed = time.monotonic() - started

    outcomes = sorted((o.status, o.cancel_reason) for o in snapshot.orders)
    assert outcomes.count(("confirmed", None)) == 50
    assert outcomes.count(("cancelled", "out_of_stock")) == 150
    stock = await shop.stock(teapot)
    assert (stock.available, stock.reserved, stock.sold, stock.added) == (0, 0, 50, 50)
    assert len([p for p in snapshot.payments if p.status == "captured"]) == 50
    assert elapsed < 20

"""Inventory: reading and adding stock; no oversell however many orders race."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from shop.events import OrderCreated, OrderLine, order_key
from shop.invariants import admin_context
from shop.inventory import Inventory, metadata
from tests.examples.shop.kit import ShopKit
from tests.servers import postgres_schema  # noqa: F401 - a fixture

from flotilla import Database, InvalidArgument, NotFound, PermissionDenied
from flotilla.testing import Cluster, wait_for


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
    await asyncio.gather(*(shop.order(buyers[n % 10], (teapot, 1)) for n in range(200)))
    snapshot = await shop.settled(timeout=20)  # the bound; speed is bench/shop.py's

    outcomes = sorted((o.status, o.cancel_reason) for o in snapshot.orders)
    assert outcomes.count(("confirmed", None)) == 50
    assert outcomes.count(("cancelled", "out_of_stock")) == 150
    stock = await shop.stock(teapot)
    assert (stock.available, stock.reserved, stock.sold, stock.added) == (0, 0, 50, 50)
    assert len([p for p in snapshot.payments if p.status == "captured"]) == 50


@pytest.fixture(params=["sqlite", "postgresql"])
def inventory_class(request: pytest.FixtureRequest, tmp_path: Path) -> type[Inventory]:
    """Inventory on a database two replicas share: one SQLite file, or one PostgreSQL schema."""
    if request.param == "sqlite":
        url, options = f"sqlite://{tmp_path}/inventory.db", {}
    else:
        url, schema = request.getfixturevalue("postgres_schema")
        options = {"connect_args": {"server_settings": {"search_path": schema}}}

    class SharedInventory(Inventory, name="inventory"):
        db = Database(url, metadata=metadata, engine_options=options)

    return SharedInventory


async def test_two_replicas_racing_reserve_all_lines_or_none_and_never_oversell(
    inventory_class: type[Inventory],
) -> None:
    async with Cluster() as cluster:
        await cluster.add(inventory_class, replicas=2)
        admin = admin_context(cluster.client_node).client(Inventory)
        await admin.init_stock(product_id=1, quantity=50)
        await admin.init_stock(product_id=2, quantity=30)
        # Each order wants one of each (lines in either order); product 2 runs out first.
        for order_id in range(1, 121):
            lines = [OrderLine(1, 1), OrderLine(2, 1)][:: 1 if order_id % 2 else -1]
            created = OrderCreated(order_id, "u1", lines, 100, "tok_ok")
            await cluster.emit("order.created", created, key=order_key(order_id))
        handled = await cluster.events.wait_handled("order.created", count=120, timeout=30)

        assert {outcome.instance for outcome in handled} == {
            node.instance_ids["inventory"] for node in cluster.nodes
        }  # both replicas took part
        # Every answer is committed; wait for the outbox relays to publish them all.
        answers = ("stock.reserved", "stock.rejected")
        await wait_for(lambda: sum(len(cluster.events.emitted(t)) for t in answers) >= 120)
        assert len(cluster.events.emitted("stock.reserved")) == 30
        assert len(cluster.events.emitted("stock.rejected")) == 90
        one, two = await admin.stock(product_id=1), await admin.stock(product_id=2)
        assert (one.available, one.reserved, one.sold) == (20, 30, 0)
        assert (two.available, two.reserved, two.sold) == (0, 30, 0)

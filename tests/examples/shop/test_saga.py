"""The order saga end to end: confirmed, declined, out of stock, cancelled, refunded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from shop.events import ORDER_CREATED, SAGA_DELIVERY, OrderCreated
from shop.inventory import Inventory
from shop.orders import Orders
from shop.payments import Payments
from tests.examples.shop.kit import ShopKit, running_shop

from flotilla import Context, FailedPrecondition, NodeConfig, NotFound, PermissionDenied, on_event
from flotilla.runtime.config import Timings
from flotilla.testing import FakeClock, wait_for


async def test_a_good_order_is_confirmed_paid_sold_and_notified(shop: ShopKit) -> None:
    teapot = await shop.product(stock=10, price_cents=2500)
    ada = await shop.signup()
    order_id = await shop.order(ada, (teapot, 3))
    await shop.settled()

    order = await shop.get(ada, order_id)
    assert (order.status, order.total_cents, order.cancel_reason) == ("confirmed", 7500, None)
    payment = await shop.payment(ada, order_id)
    assert (payment.status, payment.amount_cents) == ("captured", 7500)
    stock = await shop.stock(teapot)
    assert (stock.available, stock.reserved, stock.sold, stock.added) == (7, 0, 3, 10)
    assert await shop.kinds(ada) == [(order_id, "order_confirmed")]


async def test_a_declined_card_cancels_the_order_and_puts_the_stock_back(shop: ShopKit) -> None:
    teapot = await shop.product(stock=10)
    ada = await shop.signup()
    order_id = await shop.order(ada, (teapot, 4), card="tok_decline")
    await shop.settled()

    order = await shop.get(ada, order_id)
    assert (order.status, order.cancel_reason) == ("cancelled", "payment_declined")
    assert (await shop.payment(ada, order_id)).status == "declined"
    stock = await shop.stock(teapot)
    assert (stock.available, stock.reserved, stock.sold) == (10, 0, 0)
    assert await shop.kinds(ada) == [(order_id, "order_cancelled")]


async def test_a_total_over_the_payment_limit_is_declined() -> None:
    async with running_shop(limit_cents=5000) as shop:
        teapot = await shop.product(stock=20, price_cents=1000)
        ada = await shop.signup()
        at_limit = await shop.order(ada, (teapot, 5))
        over = await shop.order(ada, (teapot, 6))
        await shop.settled()
        assert (await shop.get(ada, at_limit)).status == "confirmed"
        assert (await shop.get(ada, over)).cancel_reason == "payment_declined"
        assert (await shop.stock(teapot)).sold == 5


async def test_an_order_beyond_the_stock_is_cancelled_out_of_stock_with_no_payment(
    shop: ShopKit,
) -> None:
    teapot, cup = await shop.product(stock=5), await shop.product(stock=1)
    ada = await shop.signup()
    # Reserved all or none: the teapots fit, the cups do not, so nothing is held.
    order_id = await shop.order(ada, (teapot, 2), (cup, 2))
    await shop.settled()

    order = await shop.get(ada, order_id)
    assert (order.status, order.cancel_reason) == ("cancelled", "out_of_stock")
    with pytest.raises(NotFound):
        await shop.payment(ada, order_id)
    assert (await shop.stock(teapot)).available == 5
    assert (await shop.stock(cup)).available == 1
    assert await shop.kinds(ada) == [(order_id, "order_cancelled")]


async def test_cancelling_a_confirmed_order_refunds_it_and_restocks(shop: ShopKit) -> None:
    teapot = await shop.product(stock=10, price_cents=700)
    ada = await shop.signup()
    order_id = await shop.order(ada, (teapot, 2))
    await shop.settled()
    assert (await shop.get(ada, order_id)).status == "confirmed"

    cancelled = await ada.client(Orders).cancel(id=order_id)
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "user_cancelled")
    await shop.settled()
    payment = await shop.payment(ada, order_id)
    assert (payment.status, payment.amount_cents) == ("refunded", 1400)
    stock = await shop.stock(teapot)
    assert (stock.available, stock.reserved, stock.sold) == (10, 0, 0)
    assert await shop.kinds(ada) == [(order_id, "order_cancelled"), (order_id, "order_confirmed")]
    with pytest.raises(FailedPrecondition, match="cancelled"):
        await ada.client(Orders).cancel(id=order_id)


async def test_cancelling_before_the_inventory_saw_the_order_reserves_nothing(
    tmp_path: Path,
) -> None:
    # The inventory is down (its database in a file, so it comes back with it):
    # order.created and order.cancelled wait for it, and may reach it in either order.
    async with running_shop(_with_files(tmp_path)) as shop:
        teapot = await shop.product(stock=10)
        ada = await shop.signup()
        await shop.cluster.stop(shop.node_of(Inventory))
        order_id = await shop.order(ada, (teapot, 3))
        cancelled = await ada.client(Orders).cancel(id=order_id)
        assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "user_cancelled")

        await shop.cluster.add(Inventory())
        # Both events reach the restarted inventory (whichever first): it does not just miss them.
        expected = {"inventory.on_order_created", "inventory.on_order_cancelled"}
        await wait_for(lambda: expected <= {o.handler for o in shop.cluster.events.handled()})
        await shop.settled()
        stock = await shop.stock(teapot)
        assert (stock.available, stock.reserved, stock.sold) == (10, 0, 0)
        with pytest.raises(NotFound):  # payments voided it before any charge
            await shop.payment(ada, order_id)
        assert await shop.kinds(ada) == [(order_id, "order_cancelled")]


async def test_cancelling_while_the_payment_is_in_flight_ends_uncharged(tmp_path: Path) -> None:
    # The stock is reserved; payments is down, so stock.reserved waits.  The
    # cancel releases the stock; payments then sees stock.reserved and
    # order.cancelled in either order: void (no charge) or captured then refunded.
    async with running_shop(_with_files(tmp_path)) as shop:
        teapot = await shop.product(stock=10)
        ada = await shop.signup()
        await shop.cluster.stop(shop.node_of(Payments))
        order_id = await shop.order(ada, (teapot, 3))
        await shop.cluster.events.wait_handled("order.created")
        assert (await shop.stock(teapot)).reserved == 3
        await ada.client(Orders).cancel(id=order_id)

        await shop.cluster.add(Payments())
        snapshot = await shop.settled()
        assert [p.status for p in snapshot.payments] in ([], ["refunded"])
        stock = await shop.stock(teapot)
        assert (stock.available, stock.reserved, stock.sold) == (10, 0, 0)
        assert (await shop.get(ada, order_id)).status == "cancelled"


async def test_shipping_and_delivery_are_for_admins_and_end_cancellation(shop: ShopKit) -> None:
    teapot = await shop.product(stock=10)
    ada = await shop.signup()
    order_id = await shop.order(ada, (teapot, 1))
    await shop.settled()

    with pytest.raises(PermissionDenied):
        await ada.client(Orders).ship(id=order_id)
    with pytest.raises(FailedPrecondition, match="not shipped"):
        await shop.admin.client(Orders).deliver(id=order_id)
    assert (await shop.admin.client(Orders).ship(id=order_id)).status == "shipped"
    with pytest.raises(FailedPrecondition, match="shipped"):
        await ada.client(Orders).cancel(id=order_id)
    assert (await shop.admin.client(Orders).deliver(id=order_id)).status == "delivered"
    with pytest.raises(FailedPrecondition, match="delivered"):
        await ada.client(Orders).cancel(id=order_id)
    await shop.settled()
    assert await shop.kinds(ada) == [(order_id, "order_confirmed"), (order_id, "order_shipped")]


async def test_a_crashed_inventory_loses_and_repeats_nothing(tmp_path: Path) -> None:
    # The inventory crashes with an order's reservation in hand: the event comes
    # back (after ack_wait, on the fake clock) to the replica that replaces it,
    # on the same database, while the other orders' events go on.
    stalled = asyncio.Event()

    class StallingInventory(Inventory, name="inventory"):
        @on_event(ORDER_CREATED, delivery=SAGA_DELIVERY)
        async def on_order_created(self, order: OrderCreated, ctx: Context) -> None:
            if not stalled.is_set():  # the first order to arrive
                stalled.set()
                await asyncio.Event().wait()  # until the crash cuts it short
            await super().on_order_created(order, ctx)

    clock = FakeClock()
    async with running_shop(_with_files(tmp_path), clock=clock) as shop:
        teapot = await shop.product(stock=15)
        ada = await shop.signup()
        await shop.cluster.stop(shop.node_of(Inventory))
        await shop.cluster.add(StallingInventory())
        for _ in range(20):
            await shop.order(ada, (teapot, 1))
        async with asyncio.timeout(10):
            await stalled.wait()
        await shop.cluster.crash(shop.node_of(Inventory))
        await shop.cluster.add(Inventory())

        snapshot = await shop.settled(timeout=20)
        statuses = sorted(o.status for o in snapshot.orders)
        assert (statuses.count("confirmed"), statuses.count("cancelled")) == (15, 5)
        stock = await shop.stock(teapot)
        assert (stock.available, stock.reserved, stock.sold) == (0, 0, 15)
        # The stalled order (and any others cut short with it) came back and were handled.
        again = [o for o in shop.cluster.events.handled("order.created") if o.envelope.attempt > 1]
        assert again
        assert {o.handler for o in again} == {"inventory.on_order_created"}


def _with_files(tmp_path: Path) -> NodeConfig:
    """Databases in files under ``tmp_path``: a service restarted finds its data."""
    return NodeConfig(data_dir=str(tmp_path), timings=Timings(grace=0.0, drain=2.0))

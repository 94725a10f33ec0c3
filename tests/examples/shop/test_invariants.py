"""The invariants checker: silent on a consistent shop, and names each kind of violation."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from shop.catalog import Product
from shop.invariants import Snapshot, violations
from shop.inventory import Stock
from shop.notifications import Notification
from shop.orders import Order, OrderItem
from shop.payments import Payment
from tests.examples.shop.kit import ShopKit


def _order(id: int, status: str, reason: str | None = None, quantity: int = 1) -> Order:
    items = [OrderItem(product_id=1, quantity=quantity, price_cents=100)]
    return Order(id, status, items, 100 * quantity, reason, user_id="7", created_at=0.0)


def _note(id: int, order_id: int, kind: str) -> Notification:
    return Notification(id, order_id, kind, created_at=0.0, user_id="7")


def consistent() -> Snapshot:
    """Order 1 confirmed and shipped, 2 declined, 3 out of stock, 4 refunded."""
    return Snapshot(
        products=[Product(1, "teapot", 100, "tea")],
        stock=[Stock(product_id=1, available=9, reserved=0, sold=1, added=10)],
        orders=[
            _order(1, "shipped"),
            _order(2, "cancelled", "payment_declined"),
            _order(3, "cancelled", "out_of_stock", quantity=50),
            _order(4, "cancelled", "user_cancelled"),
        ],
        payments=[
            Payment(1, "captured", 100, "7"),
            Payment(2, "declined", 100, "7"),
            Payment(4, "refunded", 100, "7"),
        ],
        notifications=[
            _note(1, 1, "order_confirmed"),
            _note(2, 1, "order_shipped"),
            _note(3, 2, "order_cancelled"),
            _note(4, 3, "order_cancelled"),
            _note(5, 4, "order_confirmed"),
            _note(6, 4, "order_cancelled"),
        ],
    )


def test_a_consistent_shop_has_no_violations() -> None:
    assert violations(consistent()) == []


def _replace(field: str, index: int, **changes: object) -> Callable[[Snapshot], None]:
    def change(snapshot: Snapshot) -> None:
        items = getattr(snapshot, field)
        items[index] = msgspec.structs.replace(items[index], **changes)

    return change


def _append(field: str, item: object) -> Callable[[Snapshot], None]:
    return lambda snapshot: getattr(snapshot, field).append(item)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_replace("orders", 1, status="pending"), "order 2 is still pending"),
        (_replace("stock", 0, available=10), "available 10 + reserved 0 + sold 1 != 10 added"),
        (_replace("stock", 0, available=11, sold=-1), "a negative count"),
        (_replace("stock", 0, available=8, reserved=1), "1 units reserved while no order"),
        (_replace("stock", 0, available=8, sold=2), "2 sold, but paid orders hold 1"),
        (_append("products", Product(2, "cup", 5, "tea")), "product 2 has no stock record"),
        (_replace("payments", 0, amount_cents=90), "order 1 is shipped (total 100) but its"),
        (_replace("payments", 2, status="captured"), "order 4 is cancelled but its payment is"),
        (_append("payments", Payment(3, "declined", 1, "7")), "order 3 was out of stock, yet"),
        (_append("payments", Payment(9, "captured", 1, "7")), "payment for unknown order"),
        (_append("notifications", _note(7, 1, "order_shipped")), "order 1: 2 notifications"),
        (_replace("notifications", 1, kind="order_cancelled"), "order 1 (shipped): no order_shi"),
        (_replace("notifications", 1, user_id="8"), "notification order_shipped went to user 8"),
        (_replace("notifications", 2, kind="order_confirmed"), "order 2 (cancelled): no order_c"),
        (_replace("payments", 2, status="declined"), "order 4 (cancelled): a order_confirmed"),
    ],
)
def test_each_violation_is_named(change: Callable[[Snapshot], None], expected: str) -> None:
    snapshot = consistent()
    change(snapshot)
    found = violations(snapshot)
    assert any(expected in problem for problem in found), found


async def test_the_checker_reads_a_running_shop(shop: ShopKit) -> None:
    teapot = await shop.product(stock=2)
    ada = await shop.signup()
    await shop.order(ada, (teapot, 1))
    snapshot = await shop.settled()
    assert [(s.product_id, s.sold) for s in snapshot.stock] == [(teapot, 1)]
    assert [o.status for o in snapshot.orders] == ["confirmed"]
    assert [n.kind for n in snapshot.notifications] == ["order_confirmed"]

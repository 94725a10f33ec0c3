"""The shop's invariants, checked from outside over RPC (tests, the demo, the load generator).

At a quiet moment (nothing in flight), whatever crashed before:

* every order is terminal: ``confirmed`` or ``cancelled`` (or shipped, delivered);
* per product ``available + reserved + sold == added``, none negative; no unit
  reserved; ``sold`` equals the units of its confirmed (shipped, delivered) orders;
* a confirmed (shipped, delivered) order has exactly one payment, captured, of
  its total; a cancelled one has none captured (declined or refunded only), and
  one cancelled out of stock has none at all;
* at most one notification per order and kind, and one for each thing that happened.

``await check_invariants(admin_context(node))`` reads every service (as an
admin) and returns the violations found, each a sentence; ``[]`` means all hold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from flotilla import Context, Node
from flotilla.headers import Headers, Principal

from .auth import ADMIN
from .catalog import Catalog, Product
from .inventory import Inventory, Stock
from .notifications import Notification, Notifications
from .orders import Order, Orders
from .payments import Payment, Payments

__all__ = ["Snapshot", "admin_context", "check_invariants", "read_snapshot", "violations"]

T = TypeVar("T")
HELD = ("confirmed", "shipped", "delivered")  # the statuses of a paid order


class Snapshot(msgspec.Struct):
    """Everything the checks read, one list per service."""

    products: list[Product]
    stock: list[Stock]
    orders: list[Order]
    payments: list[Payment]
    notifications: list[Notification]


def admin_context(node: Node) -> Context:
    """A root context on ``node`` acting for an admin (the checker reads every user's data)."""
    return Context(node.caller, Headers(principal=Principal("invariants", (ADMIN,))))


async def check_invariants(ctx: Context) -> list[str]:
    """The violations of the shop's invariants now (``ctx`` must act for an admin)."""
    return violations(await read_snapshot(ctx))


async def read_snapshot(ctx: Context) -> Snapshot:
    catalog = ctx.client(Catalog)
    products: list[Product] = []
    cursor: str | None = None
    while True:
        page = await catalog.list_products(limit=100, cursor=cursor)
        products += page.items
        if (cursor := page.next_cursor) is None:
            break
    inventory, orders = ctx.client(Inventory), ctx.client(Orders)
    payments, notifications = ctx.client(Payments), ctx.client(Notifications)
    return Snapshot(
        products=products,
        stock=await _all(lambda after: inventory.levels(after_id=after), lambda s: s.product_id),
        orders=await _all(lambda after: orders.list_all(after_id=after), lambda o: o.id),
        payments=await _all(lambda after: payments.list_all(after_id=after), lambda p: p.order_id),
        notifications=await _all(lambda after: notifications.list_all(after_id=after), _id),
    )


async def _all(fetch: Callable[[int], Awaitable[list[T]]], key: Callable[[T], int]) -> list[T]:
    """Every item of a listing paged by ``after_id``."""
    found: list[T] = []
    while page := await fetch(key(found[-1]) if found else 0):
        found += page
    return found


def _id(notification: Notification) -> int:
    return notification.id


def violations(snapshot: Snapshot) -> list[str]:
    """The invariants ``snapshot`` breaks (see the module docstring)."""
    return [
        *_order_violations(snapshot),
        *_stock_violations(snapshot),
        *_payment_violations(snapshot),
        *_notification_violations(snapshot),
    ]


def _order_violations(snapshot: Snapshot) -> list[str]:
    return [f"order {o.id} is still {o.status}" for o in snapshot.orders if o.status == "pending"]


def _stock_violations(snapshot: Snapshot) -> list[str]:
    found = []
    quiet = not any(o.status == "pending" for o in snapshot.orders)
    sold: Counter[int] = Counter()
    for order in snapshot.orders:
        if order.status in HELD:
            for item in order.items:
                sold[item.product_id] += item.quantity
    levels = {s.product_id: s for s in snapshot.stock}
    for product in snapshot.products:
        if product.id not in levels:
            found.append(f"product {product.id} has no stock record")
    for s in snapshot.stock:
        name = f"product {s.product_id}"
        if s.available + s.reserved + s.sold != s.added:
            found.append(
                f"{name}: available {s.available} + reserved {s.reserved} + sold {s.sold}"
                f" != {s.added} added"
            )
        if min(s.available, s.reserved, s.sold) < 0:
            found.append(f"{name}: a negative count in {s}")
        if quiet and s.reserved:
            found.append(f"{name}: {s.reserved} units reserved while no order is pending")
        if quiet and s.sold != sold[s.product_id]:
            found.append(f"{name}: {s.sold} sold, but paid orders hold {sold[s.product_id]}")
    return found


def _payment_violations(snapshot: Snapshot) -> list[str]:
    found = []
    paid = {p.order_id: p for p in snapshot.payments}
    known = {o.id for o in snapshot.orders}
    found += [
        f"payment for unknown order {p}" for p in snapshot.payments if p.order_id not in known
    ]
    for order in snapshot.orders:
        payment = paid.get(order.id)
        if order.status in HELD and (
            payment is None
            or payment.status != "captured"
            or payment.amount_cents != order.total_cents
        ):
            found.append(
                f"order {order.id} is {order.status} (total {order.total_cents}) but its payment is"
                f" {payment}"
            )
        if order.status == "cancelled" and payment is not None:
            if payment.status == "captured":
                found.append(f"order {order.id} is cancelled but its payment is still captured")
            if order.cancel_reason == "out_of_stock":
                found.append(f"order {order.id} was out of stock, yet has a payment {payment}")
    return found


def _notification_violations(snapshot: Snapshot) -> list[str]:
    found = []
    kinds: defaultdict[int, Counter[str]] = defaultdict(Counter)
    for n in snapshot.notifications:
        kinds[n.order_id][n.kind] += 1
    found += [
        f"order {order_id}: {times} notifications {kind}"
        for order_id, counted in kinds.items()
        for kind, times in counted.items()
        if times > 1
    ]
    paid = {p.order_id: p.status for p in snapshot.payments}
    owners = {o.id: o.user_id for o in snapshot.orders}
    for n in snapshot.notifications:
        if owners.get(n.order_id, n.user_id) != n.user_id:
            found.append(f"order {n.order_id}: notification {n.kind} went to user {n.user_id}")
    for order in snapshot.orders:
        expected = _expected_kinds(order, paid.get(order.id))
        got = set(kinds[order.id])
        for kind in sorted(expected["must"] - got):
            found.append(f"order {order.id} ({order.status}): no {kind} notification")
        for kind in sorted(got - expected["must"] - expected["may"]):
            found.append(f"order {order.id} ({order.status}): a {kind} notification")
    return found


def _expected_kinds(order: Order, payment: str | None) -> dict[str, set[str]]:
    """The notifications ``order`` must have, and those it may have, by what happened to it."""
    if order.status == "pending":
        return {"must": set(), "may": set()}
    if order.status == "cancelled":
        # A refunded order was paid before its cancel; it may have been confirmed first.
        confirmed = {"order_confirmed"} if payment == "refunded" else set()
        return {"must": {"order_cancelled"}, "may": confirmed}
    must = {"order_confirmed"} | ({"order_shipped"} if order.status != "confirmed" else set())
    return {"must": must, "may": set()}

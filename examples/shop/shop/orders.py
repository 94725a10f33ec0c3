"""The orders service: orders, their life, and who may see them.

An order's status, and what moves it (every move is one conditional UPDATE,
so a user's cancel and a saga event racing for one order cannot both win)::

    pending --payment.captured--> confirmed --ship--> shipped --deliver--> delivered
       |                              |
       | stock.rejected (out_of_stock)|  cancel (user_cancelled):
       | payment.declined             |  payments refunds, inventory puts the units back
       | cancel (user_cancelled)      v
       +-------------------------> cancelled

Creating an order stores it ``pending`` and emits ``order.created`` through the
outbox in the same transaction; the rest of the saga runs by events (see
README.md in examples/shop).  Each move out of ``pending`` or ``confirmed``
emits what happened (``order.confirmed``, ``order.cancelled``,
``order.shipped``), once, since only the winning UPDATE emits.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flotilla import Context, Database, FailedPrecondition, Service, on_event, rpc

from .auth import require_admin, require_user
from .catalog import Catalog
from .checks import RowId, count, invalid, text
from .events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_CREATED,
    ORDER_SHIPPED,
    PAYMENT_CAPTURED,
    PAYMENT_DECLINED,
    SAGA_DELIVERY,
    STOCK_REJECTED,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderLine,
    OrderShipped,
    PaymentCaptured,
    PaymentDeclined,
    StockRejected,
    order_key,
)
from .idempotency import IdempotencyKeys, body_digest
from .order_store import (
    ItemRequest,
    Order,
    OrderAccepted,
    OrderItem,
    OrderList,
    idempotency_keys,
    insert_order,
    metadata,
    move,
    order_from_row,
    orders,
    owned_order,
    owner,
    visible_order,
)

__all__ = ["ItemRequest", "Order", "OrderAccepted", "OrderItem", "OrderList", "Orders"]

MAX_LINES = 50
MAX_QUANTITY = 1000


class Orders(Service, name="orders"):
    db = Database(metadata=metadata)

    def __init__(self) -> None:
        self.keys = IdempotencyKeys(self.db, idempotency_keys)

    # -- the customer's side --------------------------------------------------------------

    @rpc
    async def create(
        self,
        ctx: Context,
        items: list[ItemRequest],
        card_token: str,
        idempotency_key: str | None = None,
    ) -> OrderAccepted:
        """A pending order of ``items`` for the caller, paid with ``card_token``.

        With an ``idempotency_key`` (per user), a repeat of the same request
        answers the order it made; the same key with another body is refused
        (``AlreadyExists``).
        """
        user = require_user(ctx)
        card_token = text("card_token", card_token, max_length=100)
        digest = body_digest(items, card_token)
        if idempotency_key is not None:
            idempotency_key = text("idempotency_key", idempotency_key, max_length=200)
            earlier = await self.keys.order_of(user.subject, idempotency_key, digest)
            if earlier is not None:
                return await self._accepted(earlier)
        priced = await self._price(ctx, items)
        try:
            order_id, made = await self._store(
                ctx, user.subject, priced, card_token, idempotency_key
            )
        except IntegrityError:
            # Only the key's primary key can collide: a request with the same key
            # committed while this one ran (PostgreSQL runs them side by side).
            if idempotency_key is None:
                raise
            earlier = await self.keys.order_of(user.subject, idempotency_key, digest)
            if earlier is None:
                raise
            return await self._accepted(earlier)
        if made:
            return OrderAccepted(id=order_id, status="pending")
        return await self._accepted(order_id)  # made by an earlier request with this key

    async def _store(
        self,
        ctx: Context,
        user_id: str,
        priced: list[OrderItem],
        card_token: str,
        idempotency_key: str | None,
    ) -> tuple[int, bool]:
        """Store the order, its key and ``order.created`` in one transaction: (the order's
        id, True), or (the earlier order's id, False) when a request with the key came first."""
        digest = body_digest(priced, card_token)
        total = sum(line.quantity * line.price_cents for line in priced)
        async with self.db.transaction(ctx) as tx:
            if idempotency_key is not None:
                earlier = await self.keys.find(tx.session, user_id, idempotency_key, digest)
                if earlier is not None:
                    return earlier, False
            order_id = await insert_order(tx.session, user_id, priced, total)
            if idempotency_key is not None:
                await self.keys.record(tx.session, user_id, idempotency_key, digest, order_id)
            created = OrderCreated(
                order_id=order_id,
                user_id=user_id,
                lines=[OrderLine(line.product_id, line.quantity) for line in priced],
                total_cents=total,
                card_token=card_token,
            )
            tx.emit(ORDER_CREATED, created, key=order_key(order_id))
        return order_id, True

    @rpc(idempotent=True)
    async def get(self, ctx: Context, id: RowId) -> Order:
        """One order: the caller's own (an admin's: any); ``NotFound`` otherwise."""
        user = require_user(ctx)
        async with self.db.transaction() as tx:
            return await visible_order(tx.session, id, user)

    @rpc(name="list", idempotent=True)
    async def list_own(self, ctx: Context, limit: int = 100) -> OrderList:
        """The caller's orders, the last created first (``limit`` of them)."""
        user = require_user(ctx)
        count("limit", limit, low=1, high=1000)
        query = select(orders).where(orders.c.user_id == user.subject)
        async with self.db.transaction() as tx:
            rows = (await tx.session.execute(query.order_by(orders.c.id.desc()).limit(limit))).all()
            return OrderList(items=[await order_from_row(tx.session, row) for row in rows])

    @rpc
    async def cancel(self, ctx: Context, id: RowId) -> Order:
        """Cancel a pending order (its reservation is released) or a confirmed one (refunded,
        its units back in stock); ``FailedPrecondition`` once shipped, or when cancelled.

        Only the order's owner may cancel it: another user gets ``NotFound``, an admin who
        is not the owner ``PermissionDenied``."""
        user = require_user(ctx)
        async with self.db.transaction(ctx) as tx:
            order = await owned_order(tx.session, id, user)
            if await move(tx.session, id, ("pending", "confirmed"), "cancelled", "user_cancelled"):
                cancelled = OrderCancelled(id, order.user_id, "user_cancelled")
                tx.emit(ORDER_CANCELLED, cancelled, key=order_key(id))
                return await visible_order(tx.session, id, user)
        raise FailedPrecondition(f"order {id} is {order.status}: it cannot be cancelled")

    # -- the shop's side ------------------------------------------------------------------

    @rpc
    async def ship(self, ctx: Context, id: RowId) -> Order:
        """confirmed -> shipped (admins only)."""
        return await self._advance(ctx, id, "confirmed", "shipped")

    @rpc
    async def deliver(self, ctx: Context, id: RowId) -> Order:
        """shipped -> delivered (admins only)."""
        return await self._advance(ctx, id, "shipped", "delivered")

    @rpc(idempotent=True)
    async def list_all(self, ctx: Context, after_id: int = 0, limit: int = 500) -> list[Order]:
        """Every user's orders by id, ``limit`` at a time from ``after_id`` (admins only)."""
        require_admin(ctx)
        count("limit", limit, low=1, high=1000)
        query = select(orders).where(orders.c.id > after_id).order_by(orders.c.id).limit(limit)
        async with self.db.transaction() as tx:
            rows = (await tx.session.execute(query)).all()
            return [await order_from_row(tx.session, row) for row in rows]

    # -- the saga -------------------------------------------------------------------------

    @on_event(STOCK_REJECTED, delivery=SAGA_DELIVERY)
    async def on_stock_rejected(self, event: StockRejected, ctx: Context) -> None:
        await self._cancel_pending(ctx, event.order_id, "out_of_stock")

    @on_event(PAYMENT_DECLINED, delivery=SAGA_DELIVERY)
    async def on_payment_declined(self, event: PaymentDeclined, ctx: Context) -> None:
        await self._cancel_pending(ctx, event.order_id, "payment_declined")

    @on_event(PAYMENT_CAPTURED, delivery=SAGA_DELIVERY)
    async def on_payment_captured(self, event: PaymentCaptured, ctx: Context) -> None:
        """pending -> confirmed.  An order cancelled meanwhile stays cancelled: the payments
        service refunds it when it sees the ``order.cancelled`` that cancel emitted."""
        async with self.db.transaction(ctx) as tx:
            if await move(tx.session, event.order_id, ("pending",), "confirmed"):
                user_id = await owner(tx.session, event.order_id)
                confirmed = OrderConfirmed(event.order_id, user_id)
                tx.emit(ORDER_CONFIRMED, confirmed, key=order_key(event.order_id))

    # -- helpers --------------------------------------------------------------------------

    async def _cancel_pending(self, ctx: Context, order_id: int, reason: str) -> None:
        async with self.db.transaction(ctx) as tx:
            if await move(tx.session, order_id, ("pending",), "cancelled", reason):
                cancelled = OrderCancelled(order_id, await owner(tx.session, order_id), reason)
                tx.emit(ORDER_CANCELLED, cancelled, key=order_key(order_id))

    async def _advance(self, ctx: Context, id: int, old: str, new: str) -> Order:
        admin = require_admin(ctx)
        async with self.db.transaction(ctx) as tx:
            order = await visible_order(tx.session, id, admin)
            if await move(tx.session, id, (old,), new):
                if new == "shipped":
                    tx.emit(ORDER_SHIPPED, OrderShipped(id, order.user_id), key=order_key(id))
                return await visible_order(tx.session, id, admin)
        raise FailedPrecondition(f"order {id} is {order.status}, not {old}: it cannot be {new}")

    async def _accepted(self, order_id: int) -> OrderAccepted:
        async with self.db.transaction() as tx:
            status = (
                await tx.session.execute(select(orders.c.status).where(orders.c.id == order_id))
            ).scalar_one()
        return OrderAccepted(id=order_id, status=status)

    async def _price(self, ctx: Context, items: list[ItemRequest]) -> list[OrderItem]:
        """The lines with their unit prices; refused when empty, a quantity is out of range,
        a product appears twice or does not exist (naming the line)."""
        count("items", len(items), low=1, high=MAX_LINES)
        seen: set[int] = set()
        for index, item in enumerate(items):
            count(f"items[{index}].quantity", item.quantity, low=1, high=MAX_QUANTITY)
            if item.product_id in seen:
                raise invalid(f"items[{index}].product_id", "the product is already in the order")
            seen.add(item.product_id)
        found = await ctx.client(Catalog).lookup(ids=sorted(seen))
        prices = {product.id: product.price_cents for product in found}
        for index, item in enumerate(items):
            if item.product_id not in prices:
                raise invalid(f"items[{index}].product_id", f"no product {item.product_id}")
        return [OrderItem(i.product_id, i.quantity, prices[i.product_id]) for i in items]

"""The payments service: a simulated card provider, captures, declines and refunds.

The card ``tok_ok`` pays, ``tok_decline`` (or any other) is declined, and so
is any total above ``SHOP_PAYMENT_LIMIT_CENTS`` (default 1,000,000).  One
payment per order, by its primary key::

    (none) --stock.reserved--> captured --order.cancelled--> refunded
      |   \\--stock.reserved--> declined
      +--order.cancelled (came first)--> void   (never shown: "no payment")

``void`` is why a cancelled order is never charged: ``stock.reserved`` and
``order.cancelled`` travel on different topics, so either may come first; if
the cancellation does, the later ``stock.reserved`` finds the order void and
charges nothing; if it comes second, it refunds what was captured.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from sqlalchemy import Column, Float, MetaData, String, Table, select, update

from flotilla import Context, Database, NotFound, Service, on_event, rpc

from .auth import is_admin, require_admin, require_user
from .checks import RowId, count, env_int
from .events import (
    ORDER_CANCELLED,
    PAYMENT_CAPTURED,
    PAYMENT_DECLINED,
    PAYMENT_REFUNDED,
    SAGA_DELIVERY,
    STOCK_RESERVED,
    OrderCancelled,
    PaymentCaptured,
    PaymentDeclined,
    PaymentRefunded,
    StockReserved,
    order_key,
)
from .sql import BigInt, insert_if_absent

metadata = MetaData()
payments = Table(
    "payments",
    metadata,
    Column("order_id", BigInt, primary_key=True, autoincrement=False),
    Column("user_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("amount_cents", BigInt, nullable=False),
    Column("created_at", Float, nullable=False),
)

GOOD_CARD = "tok_ok"
DEFAULT_LIMIT_CENTS = 1_000_000


class Payment(msgspec.Struct, frozen=True):
    order_id: int
    status: str
    """``captured``, ``refunded`` or ``declined``."""
    amount_cents: int
    user_id: str


class Payments(Service, name="payments"):
    db = Database(metadata=metadata)

    def __init__(self, limit_cents: int | None = None) -> None:
        if limit_cents is None:
            limit_cents = env_int(
                "SHOP_PAYMENT_LIMIT_CENTS", DEFAULT_LIMIT_CENTS, low=0, high=10**15
            )
        self.limit_cents = limit_cents
        """Totals strictly above this are declined."""

    @rpc(idempotent=True)
    async def get(self, ctx: Context, order_id: RowId) -> Payment:
        """The payment of an order of the caller's (an admin's: any); ``NotFound`` while none."""
        user = require_user(ctx)
        async with self.db.transaction() as tx:
            query = select(payments).where(payments.c.order_id == order_id)
            row = (await tx.session.execute(query)).first()
        if (
            row is None
            or row.status == "void"
            or (row.user_id != user.subject and not is_admin(user))
        ):
            raise NotFound(f"no payment for order {order_id}")
        return _payment(row)

    @rpc(idempotent=True)
    async def list_all(self, ctx: Context, after_id: int = 0, limit: int = 500) -> list[Payment]:
        """Every payment by order id, ``limit`` at a time from ``after_id`` (admins only)."""
        require_admin(ctx)
        count("limit", limit, low=1, high=1000)
        query = (
            select(payments)
            .where(payments.c.order_id > after_id, payments.c.status != "void")
            .order_by(payments.c.order_id)
            .limit(limit)
        )
        async with self.db.transaction() as tx:
            return [_payment(row) for row in (await tx.session.execute(query)).all()]

    def decide(self, card_token: str, amount_cents: int) -> str | None:
        """None if the card pays ``amount_cents``, else why it is declined."""
        if card_token != GOOD_CARD:
            return f"card {card_token!r} was declined"
        if amount_cents > self.limit_cents:
            return f"{amount_cents} cents is over the limit of {self.limit_cents}"
        return None

    @on_event(STOCK_RESERVED, delivery=SAGA_DELIVERY)
    async def on_stock_reserved(self, reserved: StockReserved, ctx: Context) -> None:
        """Charge the order's card: ``payment.captured`` or ``payment.declined``."""
        refusal = self.decide(reserved.card_token, reserved.total_cents)
        async with self.db.transaction(ctx) as tx:
            if not await insert_if_absent(
                tx.session,
                payments,
                order_id=reserved.order_id,
                user_id=reserved.user_id,
                status="captured" if refusal is None else "declined",
                amount_cents=reserved.total_cents,
                created_at=time.time(),
            ):
                return  # cancelled first (void), or charged already
            key = order_key(reserved.order_id)
            if refusal is None:
                captured = PaymentCaptured(reserved.order_id, reserved.total_cents)
                tx.emit(PAYMENT_CAPTURED, captured, key=key)
            else:
                tx.emit(PAYMENT_DECLINED, PaymentDeclined(reserved.order_id, refusal), key=key)

    @on_event(ORDER_CANCELLED, delivery=SAGA_DELIVERY)
    async def on_order_cancelled(self, cancelled: OrderCancelled, ctx: Context) -> None:
        """Refund what was captured; before any charge, void the order so none happens."""
        async with self.db.transaction(ctx) as tx:
            refunded = await tx.session.execute(
                update(payments)
                .where(payments.c.order_id == cancelled.order_id, payments.c.status == "captured")
                .values(status="refunded")
                .returning(payments.c.amount_cents)
            )
            amount = refunded.scalar_one_or_none()
            if amount is not None:
                refund = PaymentRefunded(cancelled.order_id, amount)
                tx.emit(PAYMENT_REFUNDED, refund, key=order_key(cancelled.order_id))
                return
            await insert_if_absent(
                tx.session,
                payments,
                order_id=cancelled.order_id,
                user_id=cancelled.user_id,
                status="void",
                amount_cents=0,
                created_at=time.time(),
            )


def _payment(row: Any) -> Payment:
    return Payment(row.order_id, row.status, row.amount_cents, row.user_id)

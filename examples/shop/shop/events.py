"""The events the shop's services exchange: topics and payloads (the saga's vocabulary).

Every saga event is keyed by its order id, so the events of one order are
handled one at a time, in the order each topic received them.  Handlers do not
rely on any order *between* topics: each one reads the state it finds (see
README.md in examples/shop for the flow and its races).
"""

from __future__ import annotations

import msgspec

from flotilla import DeliveryPolicy

PRODUCT_CREATED = "product.created"
ORDER_CREATED = "order.created"
STOCK_RESERVED = "stock.reserved"
STOCK_REJECTED = "stock.rejected"
PAYMENT_CAPTURED = "payment.captured"
PAYMENT_DECLINED = "payment.declined"
PAYMENT_REFUNDED = "payment.refunded"
ORDER_CONFIRMED = "order.confirmed"
ORDER_CANCELLED = "order.cancelled"
ORDER_SHIPPED = "order.shipped"

SAGA_DELIVERY = DeliveryPolicy(
    max_deliveries=100, backoff_base=0.05, backoff_max=5.0, ack_wait=10.0
)
"""A saga step must not be dead-lettered by a short outage (a database restarting,
two deliveries colliding on a row): about eight minutes of tries, 50 ms apart at first.
A running handler renews its delivery, so a short ``ack_wait`` only means that
the events of a crashed replica come back sooner (10 s)."""


def order_key(order_id: int) -> str:
    """The key of every event about one order."""
    return f"order-{order_id}"


class ProductCreated(msgspec.Struct, frozen=True):
    product_id: int
    initial_stock: int


class OrderLine(msgspec.Struct, frozen=True):
    product_id: int
    quantity: int


class OrderCreated(msgspec.Struct, frozen=True):
    order_id: int
    user_id: str
    lines: list[OrderLine]
    total_cents: int
    card_token: str


class StockReserved(msgspec.Struct, frozen=True):
    order_id: int
    user_id: str
    total_cents: int
    card_token: str


class StockRejected(msgspec.Struct, frozen=True):
    order_id: int
    reason: str


class PaymentCaptured(msgspec.Struct, frozen=True):
    order_id: int
    amount_cents: int


class PaymentDeclined(msgspec.Struct, frozen=True):
    order_id: int
    reason: str


class PaymentRefunded(msgspec.Struct, frozen=True):
    order_id: int
    amount_cents: int


class OrderConfirmed(msgspec.Struct, frozen=True):
    order_id: int
    user_id: str


class OrderCancelled(msgspec.Struct, frozen=True):
    order_id: int
    user_id: str
    reason: str
    """``out_of_stock``, ``payment_declined`` or ``user_cancelled``."""


class OrderShipped(msgspec.Struct, frozen=True):
    order_id: int
    user_id: str

"""The orders service's tables, its result types, and the statements on them.

Every status change is :func:`move`: one conditional UPDATE, so of two
changes racing for one order (a user's cancel, a saga event) exactly one wins.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from sqlalchemy import Column, Float, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flotilla import NotFound, PermissionDenied
from flotilla.headers import Principal

from .auth import is_admin
from .checks import RowId
from .idempotency import keys_table
from .sql import BigInt

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", BigInt, primary_key=True, autoincrement=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("cancel_reason", String(32), nullable=True),
    Column("total_cents", BigInt, nullable=False),
    Column("created_at", Float, nullable=False),
)
order_items = Table(
    "order_items",
    metadata,
    Column("order_id", BigInt, primary_key=True, autoincrement=False),
    Column("product_id", BigInt, primary_key=True, autoincrement=False),
    Column("quantity", BigInt, nullable=False),
    Column("price_cents", BigInt, nullable=False),
)
idempotency_keys = keys_table(metadata)


class ItemRequest(msgspec.Struct, frozen=True):
    product_id: RowId
    quantity: int


class OrderItem(msgspec.Struct, frozen=True):
    product_id: int
    quantity: int
    price_cents: int
    """The unit price when the order was made."""


class OrderAccepted(msgspec.Struct, frozen=True):
    id: int
    status: str


class Order(msgspec.Struct, frozen=True):
    id: int
    status: str
    """``pending``, ``confirmed``, ``cancelled``, ``shipped`` or ``delivered``."""
    items: list[OrderItem]
    total_cents: int
    cancel_reason: str | None
    """``out_of_stock``, ``payment_declined``, ``user_cancelled``, or None."""
    user_id: str
    created_at: float


class OrderList(msgspec.Struct, frozen=True):
    items: list[Order]


async def insert_order(
    session: AsyncSession, user_id: str, priced: list[OrderItem], total: int
) -> int:
    result = await session.execute(
        insert(orders)
        .values(
            user_id=user_id,
            status="pending",
            cancel_reason=None,
            total_cents=total,
            created_at=time.time(),
        )
        .returning(orders.c.id)
    )
    order_id = int(result.scalar_one())
    await session.execute(
        insert(order_items),
        [{"order_id": order_id, **msgspec.structs.asdict(line)} for line in priced],
    )
    return order_id


async def move(
    session: AsyncSession, order_id: int, old: tuple[str, ...], new: str, reason: str | None = None
) -> bool:
    """``old`` -> ``new`` if the order is in one of ``old`` (one conditional UPDATE)."""
    values: dict[str, Any] = {"status": new}
    if reason is not None:
        values["cancel_reason"] = reason
    result = await session.execute(
        update(orders).where(orders.c.id == order_id, orders.c.status.in_(old)).values(values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def owner(session: AsyncSession, order_id: int) -> str:
    query = select(orders.c.user_id).where(orders.c.id == order_id)
    return str((await session.execute(query)).scalar_one())


async def visible_order(session: AsyncSession, order_id: int, user: Principal) -> Order:
    """The order, if ``user`` may see it; another user's order is as unknown as a missing one."""
    row = (await session.execute(select(orders).where(orders.c.id == order_id))).first()
    if row is None or (row.user_id != user.subject and not is_admin(user)):
        raise NotFound(f"no order {order_id}")
    return await order_from_row(session, row)


async def owned_order(session: AsyncSession, order_id: int, user: Principal) -> Order:
    """The order, if ``user`` owns it: what only its owner may act on (cancel it).

    Another user's order is ``NotFound``, as in :func:`visible_order`; an admin who may read
    it but is not its owner is ``PermissionDenied`` (the order is not hidden from them, but
    it is not theirs to act on).
    """
    order = await visible_order(session, order_id, user)
    if order.user_id != user.subject:
        raise PermissionDenied(f"order {order_id} is another user's: only its owner may do this")
    return order


async def order_from_row(session: AsyncSession, row: Any) -> Order:
    query = select(order_items).where(order_items.c.order_id == row.id)
    items = [
        OrderItem(item.product_id, item.quantity, item.price_cents)
        for item in (await session.execute(query.order_by(order_items.c.product_id))).all()
    ]
    return Order(
        id=row.id,
        status=row.status,
        items=items,
        total_cents=row.total_cents,
        cancel_reason=row.cancel_reason,
        user_id=row.user_id,
        created_at=row.created_at,
    )

"""The notifications service: tells a user what happened to their orders, once each.

One notification per order and kind (``order_confirmed``, ``order_cancelled``,
``order_shipped``), however often the event behind it is delivered: the inbox
drops a redelivered event, and the unique (order, kind) pair drops a second
event of the same kind (the row is inserted "if absent").  Here a
notification is a row a user can list; sending it by mail would be an effect
outside the database, made idempotent the same way (by this row).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from sqlalchemy import Column, Float, MetaData, String, Table, UniqueConstraint, select

from flotilla import Context, Database, Service, on_event, rpc

from .auth import require_admin, require_user
from .checks import count
from .events import (
    ORDER_CANCELLED,
    ORDER_CONFIRMED,
    ORDER_SHIPPED,
    SAGA_DELIVERY,
    OrderCancelled,
    OrderConfirmed,
    OrderShipped,
)
from .sql import BigInt, insert_if_absent

metadata = MetaData()
notifications = Table(
    "notifications",
    metadata,
    Column("id", BigInt, primary_key=True, autoincrement=True),
    Column("order_id", BigInt, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("user_id", String(64), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("order_id", "kind"),
)


class Notification(msgspec.Struct, frozen=True):
    id: int
    """Increasing in the order notifications were made (``list_all`` pages by it)."""
    order_id: int
    kind: str
    """``order_confirmed``, ``order_cancelled`` or ``order_shipped``."""
    created_at: float
    user_id: str


class NotificationList(msgspec.Struct, frozen=True):
    items: list[Notification]


class Notifications(Service, name="notifications"):
    db = Database(metadata=metadata)

    @rpc(name="list", idempotent=True)
    async def list_own(self, ctx: Context, limit: int = 100) -> NotificationList:
        """The caller's notifications, newest first (``limit`` of them)."""
        user = require_user(ctx)
        count("limit", limit, low=1, high=1000)
        query = (
            select(notifications)
            .where(notifications.c.user_id == user.subject)
            .order_by(notifications.c.id.desc())
            .limit(limit)
        )
        async with self.db.transaction() as tx:
            rows = (await tx.session.execute(query)).all()
        return NotificationList(items=[_notification(row) for row in rows])

    @rpc(idempotent=True)
    async def list_all(
        self, ctx: Context, after_id: int = 0, limit: int = 500
    ) -> list[Notification]:
        """Every notification in the order they were made, ``limit`` at a time after the
        one of id ``after_id`` (admins only)."""
        require_admin(ctx)
        count("limit", limit, low=1, high=1000)
        query = (
            select(notifications)
            .where(notifications.c.id > after_id)
            .order_by(notifications.c.id)
            .limit(limit)
        )
        async with self.db.transaction() as tx:
            return [_notification(row) for row in (await tx.session.execute(query)).all()]

    @on_event(ORDER_CONFIRMED, delivery=SAGA_DELIVERY)
    async def on_order_confirmed(self, event: OrderConfirmed, ctx: Context) -> None:
        await self._notify(ctx, event.order_id, event.user_id, "order_confirmed")

    @on_event(ORDER_CANCELLED, delivery=SAGA_DELIVERY)
    async def on_order_cancelled(self, event: OrderCancelled, ctx: Context) -> None:
        await self._notify(ctx, event.order_id, event.user_id, "order_cancelled")

    @on_event(ORDER_SHIPPED, delivery=SAGA_DELIVERY)
    async def on_order_shipped(self, event: OrderShipped, ctx: Context) -> None:
        await self._notify(ctx, event.order_id, event.user_id, "order_shipped")

    async def _notify(self, ctx: Context, order_id: int, user_id: str, kind: str) -> None:
        async with self.db.transaction(ctx) as tx:
            await insert_if_absent(
                tx.session,
                notifications,
                order_id=order_id,
                kind=kind,
                user_id=user_id,
                created_at=time.time(),
            )


def _notification(row: Any) -> Notification:
    return Notification(row.id, row.order_id, row.kind, row.created_at, row.user_id)

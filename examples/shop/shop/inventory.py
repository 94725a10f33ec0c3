"""The inventory service: stock per product, and each order's reservation.

Per product, ``available + reserved + sold`` always equals ``added`` (all
stock ever added), none negative.  Stock moves only by conditional UPDATEs
inside one transaction (``available = available - q ... WHERE available >= q``),
so two orders racing for the last unit cannot both get it, on SQLite (one
writer at a time) as on PostgreSQL (the second UPDATE waits for the first's
row lock, then re-checks its WHERE).

Each order's reservation goes through these states, one event at a time::

    (none) --order.created, all lines fit--> reserved --payment.captured--> sold
      |  \\--order.created, a line short---> rejected      |                 |
      |                                        payment.declined or           |
      |                                        order.cancelled               |
      |                                            v                         |
      +--order.cancelled (came first)-------> released <--order.cancelled----+

``released`` and ``rejected`` are final: an ``order.created`` arriving after
``order.cancelled`` (topics have no order between them) finds the order
released and reserves nothing.  Every handler records its event in the inbox
in the same transaction as its effect, so a redelivery changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Column, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flotilla import Context, Database, NotFound, Service, on_event, rpc

from .auth import require_admin
from .checks import RowId, count
from .events import (
    ORDER_CANCELLED,
    ORDER_CREATED,
    PAYMENT_CAPTURED,
    PAYMENT_DECLINED,
    PRODUCT_CREATED,
    SAGA_DELIVERY,
    STOCK_REJECTED,
    STOCK_RESERVED,
    OrderCancelled,
    OrderCreated,
    OrderLine,
    PaymentCaptured,
    PaymentDeclined,
    ProductCreated,
    StockRejected,
    StockReserved,
    order_key,
)
from .sql import BigInt, insert_if_absent

metadata = MetaData()
stock = Table(
    "stock",
    metadata,
    Column("product_id", BigInt, primary_key=True, autoincrement=False),
    Column("available", BigInt, nullable=False),
    Column("reserved", BigInt, nullable=False),
    Column("sold", BigInt, nullable=False),
    Column("added", BigInt, nullable=False),
)
order_states = Table(
    "order_reservations",
    metadata,
    Column("order_id", BigInt, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False),
)
lines = Table(
    "reserved_lines",
    metadata,
    Column("order_id", BigInt, primary_key=True, autoincrement=False),
    Column("product_id", BigInt, primary_key=True, autoincrement=False),
    Column("quantity", BigInt, nullable=False),
)

MAX_STOCK = 1_000_000_000


class Stock(msgspec.Struct, frozen=True):
    product_id: int
    available: int
    reserved: int
    sold: int
    added: int
    """All stock ever added: always ``available + reserved + sold``."""


class Inventory(Service, name="inventory"):
    db = Database(metadata=metadata)

    # -- reading and adding stock ---------------------------------------------------------

    @rpc(idempotent=True)
    async def stock(self, product_id: RowId) -> Stock:
        """The stock of one product; ``NotFound`` when it has none yet."""
        async with self.db.transaction() as tx:
            return await _stock_of(tx.session, product_id)

    @rpc(idempotent=True)
    async def levels(self, ctx: Context, after_id: int = 0, limit: int = 500) -> list[Stock]:
        """Every product's stock, by product id, ``limit`` at a time (admins only)."""
        require_admin(ctx)
        count("limit", limit, low=1, high=1000)
        query = select(stock).where(stock.c.product_id > after_id)
        async with self.db.transaction() as tx:
            rows = await tx.session.execute(query.order_by(stock.c.product_id).limit(limit))
            return [_stock(row) for row in rows]

    @rpc
    async def add_stock(self, ctx: Context, product_id: RowId, add: int) -> Stock:
        """Add ``add`` units to what is available (admins only); the new stock."""
        require_admin(ctx)
        count("add", add, low=1, high=MAX_STOCK)
        async with self.db.transaction() as tx:
            moved = await tx.session.execute(
                update(stock)
                .where(stock.c.product_id == product_id)
                .values(available=stock.c.available + add, added=stock.c.added + add)
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"no stock of product {product_id}")
            return await _stock_of(tx.session, product_id)

    @rpc(idempotent=True)
    async def init_stock(self, ctx: Context, product_id: RowId, quantity: int) -> Stock:
        """Give a new product its first ``quantity`` units, unless it has stock already
        (admins only; the catalog calls it when it creates a product)."""
        require_admin(ctx)
        count("quantity", quantity, low=0, high=MAX_STOCK)
        async with self.db.transaction() as tx:
            await _init_stock(tx.session, product_id, quantity)
            return await _stock_of(tx.session, product_id)

    @on_event(PRODUCT_CREATED, delivery=SAGA_DELIVERY)
    async def on_product_created(self, event: ProductCreated, ctx: Context) -> None:
        async with self.db.transaction(ctx) as tx:
            await _init_stock(tx.session, event.product_id, event.initial_stock)

    # -- the saga -------------------------------------------------------------------------

    @on_event(ORDER_CREATED, delivery=SAGA_DELIVERY)
    async def on_order_created(self, order: OrderCreated, ctx: Context) -> None:
        """Reserve every line of the order, or none: ``stock.reserved`` or ``stock.rejected``."""
        async with self.db.transaction(ctx) as tx:
            session = tx.session
            if not await insert_if_absent(
                session, order_states, order_id=order.order_id, state="reserved"
            ):
                return  # cancelled before it got here (or reserved already)
            short = await _reserve_all(session, order.order_id, order.lines)
            key = order_key(order.order_id)
            if short is None:
                reserved = StockReserved(
                    order.order_id, order.user_id, order.total_cents, order.card_token
                )
                tx.emit(STOCK_RESERVED, reserved, key=key)
            else:
                await _set_state(session, order.order_id, "reserved", "rejected")
                tx.emit(STOCK_REJECTED, StockRejected(order.order_id, short), key=key)

    @on_event(PAYMENT_CAPTURED, delivery=SAGA_DELIVERY)
    async def on_payment_captured(self, payment: PaymentCaptured, ctx: Context) -> None:
        """The reserved units are sold (unless the order was cancelled meanwhile)."""
        async with self.db.transaction(ctx) as tx:
            if await _set_state(tx.session, payment.order_id, "reserved", "sold"):
                await _move(tx.session, payment.order_id, "reserved", "sold")

    @on_event(PAYMENT_DECLINED, delivery=SAGA_DELIVERY)
    async def on_payment_declined(self, payment: PaymentDeclined, ctx: Context) -> None:
        async with self.db.transaction(ctx) as tx:
            await _release(tx.session, payment.order_id)

    @on_event(ORDER_CANCELLED, delivery=SAGA_DELIVERY)
    async def on_order_cancelled(self, cancelled: OrderCancelled, ctx: Context) -> None:
        """Whatever the order holds, reserved or sold, is available again."""
        async with self.db.transaction(ctx) as tx:
            await _release(tx.session, cancelled.order_id)


async def _reserve_all(session: AsyncSession, order_id: int, wanted: list[OrderLine]) -> str | None:
    """Move every line available -> reserved; None, or why not (then nothing moved).

    Lines go in product order, so two orders lock their rows in the same order
    (no deadlock on PostgreSQL).  A line short undoes the lines before it in
    this same transaction: those rows are still ours.
    """
    done: list[OrderLine] = []
    for line in sorted(wanted, key=lambda line: line.product_id):
        moved = await session.execute(
            update(stock)
            .where(stock.c.product_id == line.product_id, stock.c.available >= line.quantity)
            .values(
                available=stock.c.available - line.quantity,
                reserved=stock.c.reserved + line.quantity,
            )
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            await _unreserve(session, done)
            return f"product {line.product_id}: fewer than {line.quantity} available"
        done.append(line)
    await session.execute(
        insert(lines),
        [{"order_id": order_id, "product_id": x.product_id, "quantity": x.quantity} for x in done],
    )
    return None


async def _unreserve(session: AsyncSession, done: list[OrderLine]) -> None:
    """Put back the lines reserved so far by this transaction (reserved -> available)."""
    for line in done:
        await session.execute(
            update(stock)
            .where(stock.c.product_id == line.product_id)
            .values(
                available=stock.c.available + line.quantity,
                reserved=stock.c.reserved - line.quantity,
            )
        )


async def _release(session: AsyncSession, order_id: int) -> None:
    """reserved or sold -> released, the units back to available; a tombstone if none came yet."""
    for held in ("reserved", "sold"):
        if await _set_state(session, order_id, held, "released"):
            await _move(session, order_id, held, "available")
            return
    await insert_if_absent(session, order_states, order_id=order_id, state="released")


async def _set_state(session: AsyncSession, order_id: int, old: str, new: str) -> bool:
    """``old`` -> ``new`` if the order is in ``old`` (a conditional UPDATE: one winner)."""
    result = await session.execute(
        update(order_states)
        .where(order_states.c.order_id == order_id, order_states.c.state == old)
        .values(state=new)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def _move(session: AsyncSession, order_id: int, source: str, target: str) -> None:
    """Move each reserved line's quantity from column ``source`` to ``target``."""
    # In product order, as reservations lock them: no deadlock with another order's move.
    query = select(lines).where(lines.c.order_id == order_id).order_by(lines.c.product_id)
    rows = await session.execute(query)
    for row in rows.all():
        await session.execute(
            update(stock)
            .where(stock.c.product_id == row.product_id)
            .values(
                {source: stock.c[source] - row.quantity, target: stock.c[target] + row.quantity}
            )
        )


async def _init_stock(session: AsyncSession, product_id: int, quantity: int) -> None:
    await insert_if_absent(
        session,
        stock,
        product_id=product_id,
        available=quantity,
        reserved=0,
        sold=0,
        added=quantity,
    )


async def _stock_of(session: AsyncSession, product_id: int) -> Stock:
    row = (await session.execute(select(stock).where(stock.c.product_id == product_id))).first()
    if row is None:
        raise NotFound(f"no stock of product {product_id}")
    return _stock(row)


def _stock(row: Any) -> Stock:
    return Stock(row.product_id, row.available, row.reserved, row.sold, row.added)

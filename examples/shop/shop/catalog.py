"""The catalog service: products, their prices and categories, listed page by page.

A product made here gets its stock in the inventory service twice over, on
purpose: at once by a call (so it can be ordered right away), and through the
outbox by ``product.created`` (so a failed call, or a crash between the two,
still ends with the stock there).  Both are "set the initial stock of product
N unless it has one", so whichever comes second changes nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec
from sqlalchemy import Column, LargeBinary, MetaData, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from flotilla import Context, Database, FlotillaError, NotFound, Service, rpc

from .auth import require_admin
from .checks import RowId, count, text
from .cursor import CursorSigner, PageCursor
from .events import PRODUCT_CREATED, ProductCreated
from .inventory import Inventory
from .sql import BigInt

log = logging.getLogger("shop.catalog")

metadata = MetaData()
products = Table(
    "products",
    metadata,
    Column("id", BigInt, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("price_cents", BigInt, nullable=False),
    Column("category", String(50), nullable=False, index=True),
)
keys = Table(
    "catalog_keys",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

MAX_PAGE = 100


class Product(msgspec.Struct, frozen=True):
    id: int
    name: str
    price_cents: int
    category: str


class ProductPage(msgspec.Struct, frozen=True):
    items: list[Product]
    next_cursor: str | None
    """Pass it back as ``cursor`` for the next page; None on the last page."""


class Catalog(Service, name="catalog"):
    db = Database(metadata=metadata)

    def __init__(self) -> None:
        self._cursors: CursorSigner | None = None

    async def on_start(self) -> None:
        self._cursors = CursorSigner(await self._cursor_key())

    @rpc
    async def create(
        self, ctx: Context, name: str, price_cents: int, category: str, initial_stock: int = 0
    ) -> Product:
        """A new product (admins only), with ``initial_stock`` units in the inventory."""
        require_admin(ctx)
        name = text("name", name, max_length=200)
        category = text("category", category, max_length=50)
        count("price_cents", price_cents, low=1, high=100_000_000)
        count("initial_stock", initial_stock, low=0, high=1_000_000_000)
        async with self.db.transaction(ctx) as tx:
            statement = insert(products).values(
                name=name, price_cents=price_cents, category=category
            )
            product_id = (await tx.session.execute(statement.returning(products.c.id))).scalar_one()
            product = Product(id=product_id, name=name, price_cents=price_cents, category=category)
            created = ProductCreated(product_id=product.id, initial_stock=initial_stock)
            tx.emit(PRODUCT_CREATED, created, key=f"product-{product.id}")
        try:
            await ctx.client(Inventory).init_stock(product_id=product.id, quantity=initial_stock)
        except FlotillaError as exc:
            # Not lost: product.created (in the outbox above) sets the stock later.
            log.warning("catalog: product %s: stock set later by its event (%s)", product.id, exc)
        return product

    @rpc(idempotent=True)
    async def get(self, id: RowId) -> Product:
        """One product; ``NotFound`` for an unknown id."""
        async with self.db.transaction() as tx:
            row = (await tx.session.execute(select(products).where(products.c.id == id))).first()
        if row is None:
            raise NotFound(f"no product {id}")
        return _product(row)

    @rpc(name="list", idempotent=True)
    async def list_products(
        self, category: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> ProductPage:
        """Products (of ``category``) by id, ``limit`` at a time; ``cursor`` continues a listing
        (a cursor this catalog did not issue, or issued for another category, is refused)."""
        count("limit", limit, low=1, high=MAX_PAGE)
        if category is not None:
            category = text("category", category, max_length=50)
        assert self._cursors is not None
        after = 0 if cursor is None else self._cursors.read(cursor, category).after_id
        query = select(products).where(products.c.id > after)
        if category is not None:
            query = query.where(products.c.category == category)
        query = query.order_by(products.c.id).limit(limit + 1)  # one more: is there a next page?
        async with self.db.transaction() as tx:
            rows = (await tx.session.execute(query)).all()
        items = [_product(row) for row in rows[:limit]]
        more = len(rows) > limit
        next_cursor = self._cursors.issue(PageCursor(category, items[-1].id)) if more else None
        return ProductPage(items=items, next_cursor=next_cursor)

    @rpc(idempotent=True)
    async def lookup(self, ids: list[RowId]) -> list[Product]:
        """The products among ``ids`` that exist (the orders service prices an order so)."""
        async with self.db.transaction() as tx:
            query = select(products).where(products.c.id.in_(ids)).order_by(products.c.id)
            return [_product(row) for row in (await tx.session.execute(query)).all()]

    async def _cursor_key(self) -> bytes:
        """The key that signs cursors: made by the first replica ever to start, then shared."""
        try:
            async with self.db.transaction() as tx:
                await tx.session.execute(insert(keys).values(name="cursor", value=os.urandom(32)))
        except IntegrityError:
            pass  # made before: read it below
        async with self.db.transaction() as tx:
            query = select(keys.c.value).where(keys.c.name == "cursor")
            return bytes((await tx.session.execute(query)).scalar_one())


def _product(row: Any) -> Product:
    return Product(id=row.id, name=row.name, price_cents=row.price_cents, category=row.category)

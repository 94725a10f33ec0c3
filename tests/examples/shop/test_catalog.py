"""The catalog: products made by admins, read by anyone, listed by category page by page."""

from __future__ import annotations

import pytest
from shop.catalog import Catalog
from tests.examples.shop.kit import ShopKit

from flotilla import InvalidArgument, NotFound, PermissionDenied, Unauthenticated


async def test_a_product_is_made_with_its_stock_and_read_back(shop: ShopKit) -> None:
    made = await shop.admin.client(Catalog).create(
        name=" Teapot ", price_cents=2500, category="tea", initial_stock=7
    )
    assert (made.name, made.price_cents, made.category) == ("Teapot", 2500, "tea")
    assert await shop.cluster.client(Catalog).get(id=made.id) == made
    stock = await shop.stock(made.id)  # set at once by the call, not only by the event
    assert (stock.available, stock.reserved, stock.sold, stock.added) == (7, 0, 0, 7)
    # product.created sets the same stock again when it arrives: nothing changes.
    await shop.cluster.events.wait_handled("product.created")
    assert (await shop.stock(made.id)).added == 7


async def test_only_admins_make_products(shop: ShopKit) -> None:
    ada = await shop.signup()
    args = {"name": "teapot", "price_cents": 100, "category": "tea"}
    with pytest.raises(PermissionDenied):
        await ada.client(Catalog).create(**args)
    with pytest.raises(Unauthenticated):
        await shop.anonymous().client(Catalog).create(**args)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price_cents": 0}, "price_cents"),
        ({"name": " "}, "name"),
        ({"category": "x" * 51}, "category"),
        ({"initial_stock": -1}, "initial_stock"),
    ],
)
async def test_bad_products_are_refused_naming_the_field(
    shop: ShopKit, change: dict[str, object], field: str
) -> None:
    args = {"name": "teapot", "price_cents": 100, "category": "tea", **change}
    with pytest.raises(InvalidArgument, match=f"^{field}: "):
        await shop.admin.client(Catalog).create(**args)


async def test_an_unknown_product_is_not_found(shop: ShopKit) -> None:
    with pytest.raises(NotFound, match="no product 5"):
        await shop.cluster.client(Catalog).get(id=5)


async def test_a_category_is_listed_page_by_page_to_its_end(shop: ShopKit) -> None:
    tea = [await shop.product(category="tea") for _ in range(5)]
    await shop.product(category="cups")
    catalog = shop.cluster.client(Catalog)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await catalog.list_products(category="tea", limit=2, cursor=cursor)
        seen += [product.id for product in page.items]
        pages += 1
        if (cursor := page.next_cursor) is None:
            break
    assert (seen, pages) == (tea, 3)
    everything = await catalog.list_products(limit=100)
    assert (len(everything.items), everything.next_cursor) == (6, None)


async def test_a_cursor_not_issued_or_a_bad_limit_is_refused(shop: ShopKit) -> None:
    await shop.product(category="tea")
    await shop.product(category="tea")
    catalog = shop.cluster.client(Catalog)
    page = await catalog.list_products(category="tea", limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidArgument, match="cursor: is not a cursor this catalog issued"):
        await catalog.list_products(category="tea", cursor=page.next_cursor[:-2] + "xx")
    with pytest.raises(InvalidArgument, match="cursor: was issued for another category"):
        await catalog.list_products(category="cups", cursor=page.next_cursor)
    for limit in (0, 101):
        with pytest.raises(InvalidArgument, match=r"^limit: "):
            await catalog.list_products(limit=limit)

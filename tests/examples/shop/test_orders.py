"""Orders: validation, ownership, idempotency keys, listing."""

from __future__ import annotations

import asyncio
import re

import pytest
from shop.orders import ItemRequest, Orders
from tests.examples.shop.kit import ShopKit

from flotilla import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, Unauthenticated


async def test_an_order_is_priced_from_the_catalog_and_starts_pending(shop: ShopKit) -> None:
    teapot, cup = await shop.product(price_cents=2500), await shop.product(price_cents=300)
    ada = await shop.signup()
    accepted = await ada.client(Orders).create(
        items=[ItemRequest(teapot, 1), ItemRequest(cup, 4)], card_token="tok_ok"
    )
    assert accepted.status == "pending"
    [handled] = await shop.cluster.events.wait_handled("order.created")  # the outbox published it
    [created] = shop.cluster.events.emitted("order.created")
    assert handled.handler == "inventory.on_order_created"
    assert created.key == f"order-{accepted.id}"
    order = await shop.get(ada, accepted.id)
    assert order.total_cents == 2500 + 4 * 300
    assert [(i.product_id, i.quantity, i.price_cents) for i in order.items] == [
        (teapot, 1, 2500),
        (cup, 4, 300),
    ]


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "items"),
        ([(1, 0)], "items[0].quantity"),
        ([(1, 1), (1, -3)], "items[1].quantity"),
        ([(1, 1001)], "items[0].quantity"),
        ([(1, 1), (999, 1)], "items[1].product_id"),
        ([(1, 1), (1, 2)], "items[1].product_id"),
    ],
)
async def test_bad_items_are_refused_naming_the_field_and_nothing_is_stored(
    shop: ShopKit, items: list[tuple[int, int]], field: str
) -> None:
    await shop.product()  # product 1
    ada = await shop.signup()
    requested = [ItemRequest(p, q) for p, q in items]
    with pytest.raises(InvalidArgument, match="^" + re.escape(field) + ": ") as caught:
        await ada.client(Orders).create(items=requested, card_token="tok_ok")
    assert caught.value.details == {"field": field}
    assert (await ada.client(Orders).list_own()).items == []
    assert shop.cluster.events.emitted("order.created") == []


async def test_a_blank_card_token_is_refused(shop: ShopKit) -> None:
    teapot = await shop.product()
    ada = await shop.signup()
    with pytest.raises(InvalidArgument, match="card_token: must not be blank"):
        await ada.client(Orders).create(items=[ItemRequest(teapot, 1)], card_token="  ")


async def test_orders_need_a_signed_in_user(shop: ShopKit) -> None:
    teapot = await shop.product()
    with pytest.raises(Unauthenticated):
        await (
            shop.anonymous()
            .client(Orders)
            .create(items=[ItemRequest(teapot, 1)], card_token="tok_ok")
        )
    with pytest.raises(Unauthenticated):
        await shop.anonymous().client(Orders).get(id=1)


async def test_another_users_order_is_not_found_but_an_admin_sees_it(shop: ShopKit) -> None:
    teapot = await shop.product()
    ada, bob = await shop.signup("Ada"), await shop.signup("Bob")
    order_id = await shop.order(ada, (teapot, 1))
    await shop.settled()

    for attempt in (bob.client(Orders).get(id=order_id), bob.client(Orders).cancel(id=order_id)):
        with pytest.raises(NotFound, match=f"no order {order_id}"):
            await attempt
    with pytest.raises(NotFound):
        await shop.payment(bob, order_id)
    assert (await bob.client(Orders).list_own()).items == []
    assert await shop.kinds(bob) == []
    assert (await shop.get(shop.admin, order_id)).user_id == ada.principal.subject  # type: ignore[union-attr]
    assert (await shop.payment(shop.admin, order_id)).status == "captured"
    with pytest.raises(NotFound, match="no order 999"):
        await shop.get(ada, 999)


async def test_only_the_owner_may_cancel_an_order_not_even_an_admin(shop: ShopKit) -> None:
    teapot = await shop.product()
    ada, bob = await shop.signup("Ada"), await shop.signup("Bob")
    order_id = await shop.order(ada, (teapot, 1))
    await shop.settled()

    with pytest.raises(NotFound, match=f"no order {order_id}"):
        await bob.client(Orders).cancel(id=order_id)
    with pytest.raises(PermissionDenied, match="only its owner"):
        await shop.admin.client(Orders).cancel(id=order_id)
    assert (await shop.get(ada, order_id)).status == "confirmed"  # neither attempt moved it
    assert shop.cluster.events.emitted("order.cancelled") == []
    cancelled = await ada.client(Orders).cancel(id=order_id)
    assert (cancelled.status, cancelled.cancel_reason) == ("cancelled", "user_cancelled")
    with pytest.raises(NotFound, match="no order 999"):
        await shop.admin.client(Orders).cancel(id=999)


async def test_a_users_list_holds_their_orders_newest_first(shop: ShopKit) -> None:
    teapot = await shop.product()
    ada, bob = await shop.signup("Ada"), await shop.signup("Bob")
    first = await shop.order(ada, (teapot, 1))
    await shop.order(bob, (teapot, 1))
    second = await shop.order(ada, (teapot, 2))
    listed = await ada.client(Orders).list_own()
    assert [order.id for order in listed.items] == [second, first]


async def test_the_same_idempotency_key_and_body_answer_the_same_order(shop: ShopKit) -> None:
    teapot = await shop.product()
    ada, bob = await shop.signup("Ada"), await shop.signup("Bob")
    first = await shop.order(ada, (teapot, 2), key="k-1")
    await shop.settled()
    again = await ada.client(Orders).create(
        items=[ItemRequest(teapot, 2)], card_token="tok_ok", idempotency_key="k-1"
    )
    assert (again.id, again.status) == (first, "confirmed")  # the order as it is now
    assert len(shop.cluster.events.emitted("order.created")) == 1
    # The key is per user: Bob's "k-1" is another order.
    assert await shop.order(bob, (teapot, 2), key="k-1") != first


async def test_the_same_idempotency_key_with_another_body_is_refused(shop: ShopKit) -> None:
    teapot = await shop.product()
    ada = await shop.signup()
    first = await shop.order(ada, (teapot, 2), key="k-1")
    for other in ([ItemRequest(teapot, 3)], [ItemRequest(teapot, 2)]):
        card = "tok_ok" if other[0].quantity == 3 else "tok_decline"
        with pytest.raises(AlreadyExists, match=f"used for another request \\(order {first}\\)"):
            await ada.client(Orders).create(items=other, card_token=card, idempotency_key="k-1")
    assert len((await ada.client(Orders).list_own()).items) == 1


async def test_concurrent_requests_with_one_key_make_one_order(shop: ShopKit) -> None:
    teapot = await shop.product()
    ada = await shop.signup()
    ids = await asyncio.gather(*(shop.order(ada, (teapot, 1), key="once") for _ in range(10)))
    assert len(set(ids)) == 1
    await shop.settled()
    assert len(shop.cluster.events.emitted("order.created")) == 1

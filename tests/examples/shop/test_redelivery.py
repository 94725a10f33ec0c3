"""Every saga event delivered again has no second effect (the inbox; rows inserted if absent)."""

from __future__ import annotations

from shop.orders import Orders
from tests.examples.shop.kit import ShopKit

from flotilla.testing import wait_for


async def test_every_event_published_twice_changes_nothing(shop: ShopKit) -> None:
    teapot = await shop.product(stock=4, price_cents=500)
    ada = await shop.signup()
    confirmed = await shop.order(ada, (teapot, 1))
    await shop.order(ada, (teapot, 1), card="tok_decline")
    await shop.order(ada, (teapot, 9))  # out of stock
    refunded = await shop.order(ada, (teapot, 2))
    await shop.settled()
    await ada.client(Orders).cancel(id=refunded)
    await shop.admin.client(Orders).ship(id=confirmed)
    before = await shop.settled()

    events = shop.cluster.events
    every = list(events.emitted())
    topics = {envelope.topic for envelope in every}
    assert {"order.created", "stock.reserved", "payment.captured", "order.cancelled"} <= topics
    handled, seen = len(events.handled()), len(events.outcomes)
    for envelope in every:
        await events.backend.publish(envelope)  # the same envelope: same id, same payload
    await wait_for(lambda: len(events.handled()) >= 2 * handled, timeout=10)

    again = events.outcomes[seen:]
    assert {outcome.result for outcome in again} == {"already_handled"}
    assert len(events.emitted()) == 2 * len(every)  # no handler emitted anything new
    assert await shop.settled() == before

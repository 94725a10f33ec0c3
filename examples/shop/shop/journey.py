"""A customer's journey through the shop over HTTP, narrated step by step (``make demo``).

Everything goes through the gateway as an outside client would: an admin
stocks two products, Ada signs up, logs in and browses, then places four
orders that between them take every branch of the saga::

    good card            pending -> confirmed             (payment captured, notified)
    declined card        pending -> cancelled payment_declined   (stock back)
    more than in stock   pending -> cancelled out_of_stock
    cancel a confirmed   confirmed -> cancelled user_cancelled   (payment refunded)

Each request prints one line (status, method, path, what happened); an order's
statuses print as they are polled, then (given a :class:`SagaWatch`) the events
the services published about it, and what each service says it did (the
payment, the stock, the notifications, read back).  A request answering another
status than the journey expects raises ``JourneyError`` naming it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console

from .events import ORDER_CANCELLED, ORDER_CONFIRMED, PAYMENT_REFUNDED
from .saga_watch import SagaWatch

__all__ = ["ADMIN_EMAIL", "ADMIN_PASSWORD", "Journey", "JourneyError"]

ADMIN_EMAIL = "admin@shop.example"
ADMIN_PASSWORD = "admin-demo-password"
SETTLE_SECONDS = 30.0  # an order leaves pending in milliseconds; this is only a bound
POLL_SECONDS = 0.05
INTRODUCTION = """\
[bold]The shop[/]: six services, each a process with a database of its own, behind one HTTP gateway:
  users (accounts, tokens)  catalog (products)  inventory (stock)  orders  payments  notifications
An order is a saga: no service calls the next one.  Each reacts to an event, does its part in one
transaction and publishes what it did (through its outbox); the others react in turn:
  order.created -> stock.reserved -> payment.captured -> order.confirmed -> a notification
The lines below are what the gateway answered, then what the services published and stored."""

Json = dict[str, Any]


class JourneyError(Exception):
    """A step of the journey got an answer it did not expect."""


class Journey:
    """The scripted customer journey, run against the gateway at ``http``'s base URL."""

    def __init__(
        self, http: httpx.AsyncClient, console: Console, watch: SagaWatch | None = None
    ) -> None:
        self.http = http
        self.console = console
        self.watch = watch
        """Where the saga's events are seen; without it the journey shows no events."""
        self._events_shown: dict[int, int] = {}  # order id -> how many of its events printed
        # Each run makes its own customer: the shop's data outlives a demo run.
        self.email = f"ada.{secrets.token_hex(3)}@example.com"
        self.orders: list[Json] = []  # the final state of each order placed

    async def run(self) -> None:
        self.console.print(INTRODUCTION)
        self._chapter("The admin stocks the shelves")
        admin = await self._login(ADMIN_EMAIL, ADMIN_PASSWORD, "the admin logs in")
        teapot = await self._product(admin, "teapot", 2500, stock=5)
        rare = await self._product(admin, "first-flush darjeeling", 9000, stock=1)
        ada = await self._sign_up()
        await self._browse(teapot)
        good = await self._good_order(ada, teapot)
        await self._declined_order(ada, teapot)
        await self._out_of_stock_order(ada, rare)
        await self._cancel_confirmed(ada, teapot, good)

    # -- the steps ---------------------------------------------------------------------------

    async def _sign_up(self) -> dict[str, str]:
        self._chapter("Ada signs up, logs in and browses")
        account = {"email": self.email, "password": "correct horse", "name": "Ada"}
        await self._call("POST", "/api/users", 201, "account created", json=account)
        return await self._login(self.email, "correct horse", "Ada logs in")

    async def _browse(self, product: Json) -> None:
        await self._call(
            "GET",
            "/api/products",
            200,
            lambda page: f"catalog: a page of {len(page['items'])} products",
            params={"limit": 5},
        )
        path = f"/api/products/{product['id']}"
        await self._call(
            "GET", path, 200, lambda got: f"catalog: {got['name']}, {_money(got['price_cents'])}"
        )
        await self._show_stock(product)

    async def _good_order(self, ada: dict[str, str], teapot: Json) -> Json:
        self._chapter("A good order: 2 teapots, a card that pays")
        order = await self._order(ada, teapot, 2, "tok_ok")
        self._expect(order, "confirmed", None)
        await self._show_payment(ada, order["id"])
        await self._show_stock(teapot)
        await self._show_notifications(ada, order["id"], "order_confirmed")
        return order

    async def _declined_order(self, ada: dict[str, str], teapot: Json) -> None:
        self._chapter("A declined card: the reserved teapot goes back on the shelf")
        order = await self._order(ada, teapot, 1, "tok_decline")
        self._expect(order, "cancelled", "payment_declined")
        await self._show_payment(ada, order["id"])
        await self._settled_stock(teapot, lambda stock: stock["reserved"] == 0)
        await self._show_notifications(ada, order["id"], "order_cancelled")

    async def _out_of_stock_order(self, ada: dict[str, str], rare: Json) -> None:
        self._chapter("Out of stock: 2 of a tea with 1 left")
        order = await self._order(ada, rare, 2, "tok_ok")
        self._expect(order, "cancelled", "out_of_stock")
        path = f"/api/orders/{order['id']}/payment"
        await self._call("GET", path, 404, "payments: none (nothing was charged)", headers=ada)
        await self._show_stock(rare)
        await self._show_notifications(ada, order["id"], "order_cancelled")

    async def _cancel_confirmed(self, ada: dict[str, str], teapot: Json, good: Json) -> None:
        self._chapter("Ada cancels the confirmed order: refunded, teapots back in stock")
        path = f"/api/orders/{good['id']}"
        await self._call("POST", f"{path}/cancel", 200, "cancel requested", headers=ada)
        final = await self._poll(path, ada, lambda answer: True)
        self._note(f"order {good['id']}: -> [bold]{final['status']}[/] ({final['cancel_reason']})")
        self._replace(final)
        await self._show_events(good["id"], PAYMENT_REFUNDED)
        payment = await self._poll(
            f"{path}/payment", ada, lambda answer: answer["status"] == "refunded"
        )
        self._note(f"payments: {payment['status']} {_money(payment['amount_cents'])}")
        await self._settled_stock(teapot, lambda stock: stock["sold"] == 0)
        await self._show_notifications(ada, good["id"], "order_confirmed", "order_cancelled")

    # -- the pieces ----------------------------------------------------------------------------

    async def _login(self, email: str, password: str, what: str) -> dict[str, str]:
        body = {"email": email, "password": password}
        answer = await self._call("POST", "/api/auth/token", 200, what, json=body)
        return {"Authorization": f"Bearer {answer['access_token']}"}

    async def _product(self, admin: dict[str, str], name: str, price: int, stock: int) -> Json:
        body = {"name": name, "price_cents": price, "category": "tea", "initial_stock": stock}
        what = f"the admin adds {name} ({_money(price)}, {stock} in stock)"
        return await self._call("POST", "/api/products", 201, what, json=body, headers=admin)

    async def _order(self, ada: dict[str, str], product: Json, quantity: int, card: str) -> Json:
        body = {"items": [{"product_id": product["id"], "quantity": quantity}], "card_token": card}
        headers = {**ada, "Idempotency-Key": f"demo-{secrets.token_hex(6)}"}
        what = f"{quantity} x {product['name']}, card {card}"
        placed = await self._call("POST", "/api/orders", 202, what, json=body, headers=headers)
        final = await self._follow(placed, ada)
        self.orders.append(final)
        await self._show_events(
            final["id"], ORDER_CONFIRMED if final["status"] == "confirmed" else ORDER_CANCELLED
        )
        return final

    async def _show_events(self, order_id: int, last: str) -> None:
        """The order's events not shown yet, once ``last`` is among them: who published what."""
        if self.watch is None:
            return
        events = await self.watch.events_of(order_id, lambda topics: last in topics)
        start, shown = events[0].time if events else 0.0, self._events_shown.get(order_id, 0)
        if shown == 0:
            self._note(f"what the services published about order {order_id}:")
        for event in events[shown:]:
            millis = f"+{(event.time - start) * 1000:.0f} ms"
            self._note(f"  {millis:>8}  {event.source:13} {event.topic}")
        self._events_shown[order_id] = len(events)

    async def _follow(self, order: Json, ada: dict[str, str]) -> Json:
        """Poll the order until it leaves ``pending``, printing each status it is seen in."""
        path, seen = f"/api/orders/{order['id']}", order["status"]
        self._note(f"order {order['id']}: [bold]{seen}[/]")
        async with asyncio.timeout(SETTLE_SECONDS):
            while order["status"] == "pending":
                await asyncio.sleep(POLL_SECONDS)
                order = (await self.http.get(path, headers=ada)).raise_for_status().json()
                if order["status"] != seen:
                    seen = order["status"]
                    reason = f" ({order['cancel_reason']})" if order["cancel_reason"] else ""
                    self._note(f"order {order['id']}: -> [bold]{seen}[/]{reason}")
        return order

    async def _poll(self, path: str, headers: dict[str, str], done: Callable[[Json], bool]) -> Json:
        """GET ``path`` until ``done`` holds for the answer (the change is in other processes)."""
        async with asyncio.timeout(SETTLE_SECONDS):
            while True:
                answer: Json = (await self.http.get(path, headers=headers)).json()
                if done(answer):
                    return answer
                await asyncio.sleep(POLL_SECONDS)

    async def _settled_stock(self, product: Json, done: Callable[[Json], bool]) -> None:
        """The stock once ``done`` holds (the inventory hears of the order after it is told)."""
        stock = await self._poll(f"/api/products/{product['id']}/stock", {}, done)
        self._note(_stock_line(product, stock))

    async def _show_stock(self, product: Json) -> None:
        path = f"/api/products/{product['id']}/stock"
        await self._call("GET", path, 200, lambda stock: _stock_line(product, stock))

    async def _show_payment(self, ada: dict[str, str], order_id: int) -> None:
        path = f"/api/orders/{order_id}/payment"
        await self._call(
            "GET",
            path,
            200,
            lambda paid: f"payments: {paid['status']} {_money(paid['amount_cents'])}",
            headers=ada,
        )

    async def _show_notifications(self, ada: dict[str, str], order_id: int, *kinds: str) -> None:
        """What Ada was told about the order, once it holds ``kinds`` (the notifications
        service hears of the order after the orders service changed it)."""

        def told_of(page: Json) -> list[str]:
            return sorted(n["kind"] for n in page["items"] if _about(n, order_id))

        page = await self._poll("/api/notifications", ada, lambda p: set(kinds) <= set(told_of(p)))
        self._note(f"notifications: Ada was told {', '.join(told_of(page))}")

    async def _call(
        self,
        method: str,
        path: str,
        expect: int,
        what: str | Callable[[Json], str],
        **kwargs: Any,
    ) -> Json:
        """The request, printed on one line with ``what`` happened (a text, or one made from
        the answer); ``JourneyError`` when it answers another status than ``expect``."""
        answer = await self.http.request(method, path, **kwargs)
        ok = answer.status_code == expect
        result: Json = answer.json() if ok else {}  # an error may not even be JSON
        text = what if isinstance(what, str) else what(result) if ok else ""
        colour = "green" if ok else "red"
        self.console.print(f"  [{colour}]{answer.status_code}[/] {method:4} {path:28} {text}")
        if not ok:
            raise JourneyError(f"{method} {path} answered {answer.status_code}: {answer.text}")
        return result

    def _expect(self, order: Json, status: str, reason: str | None) -> None:
        if (order["status"], order["cancel_reason"]) != (status, reason):
            raise JourneyError(
                f"order {order['id']} ended {order['status']} ({order['cancel_reason']}),"
                f" not {status} ({reason})"
            )

    def _replace(self, order: Json) -> None:
        self.orders = [order if o["id"] == order["id"] else o for o in self.orders]

    def _chapter(self, title: str) -> None:
        self.console.print(f"\n[bold cyan]{title}[/]")

    def _note(self, text: str) -> None:
        self.console.print(f"       {text}")


def _about(notification: Json, order_id: int) -> bool:
    return bool(notification["order_id"] == order_id)


def _stock_line(product: Json, stock: Json) -> str:
    counts = f"available {stock['available']}, reserved {stock['reserved']}, sold {stock['sold']}"
    return f"inventory: {product['name']} {counts}"


def _money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"

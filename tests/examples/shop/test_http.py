"""The shop's public HTTP API, route by route, as /work/shared/SHOP_API.md states it.

Every test drives the real thing: the six services on a Cluster behind the
gateway on uvicorn, called by httpx.  Asynchronous states (the saga) are
polled with a deadline; every test ends with the invariants checker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from shop.invariants import check_invariants
from shop.routes import ROUTES
from tests.examples.shop.http_kit import SECRET, HttpShop, http_shop


@pytest.fixture
async def shop() -> AsyncIterator[HttpShop]:
    async with http_shop() as running:
        yield running
        await running.kit.settled()
        assert await check_invariants(running.kit.admin) == []


def error_of(answer: httpx.Response) -> tuple[int, str, str]:
    """(status, code, message) of an error answer, which must have the contract's shape."""
    body = answer.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    return answer.status_code, body["error"]["code"], body["error"]["message"]


def bearer(
    claims: dict[str, object], key: str = SECRET, algorithm: str = "HS256"
) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm=algorithm)}"}


def unsigned(claims: dict[str, object]) -> dict[str, str]:
    """A token with ``alg: none`` and no signature."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return {"Authorization": f"Bearer {part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."}


# -- accounts and tokens --------------------------------------------------------------------


async def test_accounts_and_tokens(shop: HttpShop) -> None:
    body = {"email": "Ada@Example.com", "password": "correct horse", "name": "Ada"}
    made = await shop.http.post("/api/users", json=body)
    assert made.status_code == 201
    assert made.json() == {"id": made.json()["id"], "email": "ada@example.com", "name": "Ada"}
    again = await shop.http.post("/api/users", json={**body, "email": "ada@example.com"})
    assert error_of(again)[:2] == (409, "already_exists")
    bad = await shop.http.post("/api/users", json={**body, "email": "not-an-address"})
    status, _, message = error_of(bad)
    assert status == 422
    assert "email" in message

    token = await shop.http.post(
        "/api/auth/token", json={"email": "ada@example.com", "password": "correct horse"}
    )
    assert token.status_code == 200
    assert set(token.json()) == {"access_token", "token_type", "expires_in"}
    assert token.json()["token_type"] == "bearer"
    assert token.json()["expires_in"] == 3600
    claims = jwt.decode(token.json()["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(made.json()["id"])
    for wrong in (
        {"email": "ada@example.com", "password": "wrong horse"},
        {"email": "bob@example.com", "password": "correct horse"},
    ):
        refused = await shop.http.post("/api/auth/token", json=wrong)
        assert error_of(refused)[:2] == (401, "unauthenticated")


# -- catalog and stock ----------------------------------------------------------------------


async def test_products_are_made_by_admins_and_listed_page_by_page(shop: HttpShop) -> None:
    admin, user = await shop.admin(), await shop.signup()
    body = {"name": "teapot", "price_cents": 1500, "category": "tea", "initial_stock": 4}
    made = await shop.http.post("/api/products", json=body, headers=admin)
    assert made.status_code == 201
    product = made.json()
    assert product == {
        "id": product["id"],
        "name": "teapot",
        "price_cents": 1500,
        "category": "tea",
    }
    assert error_of(await shop.http.post("/api/products", json=body, headers=user))[0] == 403
    assert error_of(await shop.http.post("/api/products", json=body))[0] == 401

    for name in ("mug", "cup"):
        await shop.http.post("/api/products", json={**body, "name": name}, headers=admin)
    await shop.http.post("/api/products", json={**body, "category": "coffee"}, headers=admin)
    first = await shop.http.get("/api/products", params={"category": "tea", "limit": 2})
    assert first.status_code == 200
    assert [p["name"] for p in first.json()["items"]] == ["teapot", "mug"]
    cursor = first.json()["next_cursor"]
    assert isinstance(cursor, str)
    last = await shop.http.get(
        "/api/products", params={"category": "tea", "limit": 2, "cursor": cursor}
    )
    assert [p["name"] for p in last.json()["items"]] == ["cup"]
    assert last.json()["next_cursor"] is None
    everything = await shop.http.get("/api/products")
    assert len(everything.json()["items"]) == 4
    assert everything.json()["next_cursor"] is None
    forged = await shop.http.get("/api/products", params={"cursor": "made-up"})
    assert error_of(forged)[:2] == (422, "invalid_argument")
    assert "cursor" in error_of(forged)[2]
    too_many = await shop.http.get("/api/products", params={"limit": 0})
    assert error_of(too_many)[0] == 422
    assert "limit" in error_of(too_many)[2]

    one = await shop.http.get(f"/api/products/{product['id']}")
    assert one.status_code == 200
    assert one.json() == product
    assert error_of(await shop.http.get("/api/products/999999"))[:2] == (404, "not_found")
    assert error_of(await shop.http.get("/api/products/teapot"))[0] == 422


async def test_stock_is_read_by_anyone_and_added_by_admins(shop: HttpShop) -> None:
    admin, user = await shop.admin(), await shop.signup()
    product = await shop.product(admin, stock=5)
    stock = await shop.http.get(f"/api/products/{product}/stock")
    assert stock.status_code == 200
    assert {k: stock.json()[k] for k in ("product_id", "available", "reserved", "sold")} == {
        "product_id": product,
        "available": 5,
        "reserved": 0,
        "sold": 0,
    }
    added = await shop.http.post(f"/api/products/{product}/stock", json={"add": 3}, headers=admin)
    assert added.status_code == 200
    assert added.json()["available"] == 8
    refused = await shop.http.post(f"/api/products/{product}/stock", json={"add": 3}, headers=user)
    assert error_of(refused)[0] == 403
    negative = await shop.http.post(
        f"/api/products/{product}/stock", json={"add": -1}, headers=admin
    )
    assert error_of(negative)[0] == 422
    assert "add" in error_of(negative)[2]
    assert error_of(await shop.http.get("/api/products/424242/stock"))[0] == 404


# -- auth -----------------------------------------------------------------------------------


async def test_a_missing_or_bad_token_is_401_and_admin_routes_are_403(shop: HttpShop) -> None:
    now = int(time.time())
    claims: dict[str, object] = {"sub": "1", "exp": now + 60, "roles": ["admin"]}
    bad_tokens = {
        "missing": {},
        "expired": bearer({**claims, "exp": now - 10}),
        "forged": bearer(claims, key="another-secret-of-thirty-two-bytes!"),
        "alg none": unsigned(claims),
        "garbage": {"Authorization": "Bearer not.a.token"},
    }
    for name, headers in bad_tokens.items():
        for method, path in (
            ("GET", "/api/orders"),
            ("GET", "/api/notifications"),
            ("POST", "/api/orders/1/ship"),
        ):
            answer = await shop.http.request(method, path, headers=headers)
            assert error_of(answer)[:2] == (401, "unauthenticated"), (name, path)
    assert error_of(await shop.http.post("/api/orders/1/ship", headers=bearer(claims)))[0] == 404

    user = await shop.signup()
    for path in ("/api/orders/1/ship", "/api/orders/1/deliver"):
        assert error_of(await shop.http.post(path, headers=user))[:2] == (403, "permission_denied")


async def test_a_user_sees_only_their_own_orders_and_an_admin_any(shop: HttpShop) -> None:
    admin = await shop.admin()
    ada, bob = await shop.signup("Ada"), await shop.signup("Bob")
    product = await shop.product(admin)
    order = await shop.order(ada, (product, 1))
    await shop.settled_order(ada, order)
    for path in (f"/api/orders/{order}", f"/api/orders/{order}/payment"):
        assert error_of(await shop.http.get(path, headers=bob))[:2] == (404, "not_found")
        assert (await shop.http.get(path, headers=admin)).status_code == 200
    assert error_of(await shop.http.post(f"/api/orders/{order}/cancel", headers=bob))[:2] == (
        404,
        "not_found",
    )
    # An admin may read it but not act for its owner: 403, and the order is untouched.
    by_admin = await shop.http.post(f"/api/orders/{order}/cancel", headers=admin)
    assert error_of(by_admin)[:2] == (403, "permission_denied")
    assert (await shop.http.get("/api/orders", headers=bob)).json() == {"items": []}
    assert await shop.notifications(bob) == []
    assert (await shop.http.get(f"/api/orders/{order}", headers=ada)).json()["status"] == (
        "confirmed"
    )


# -- bad input ------------------------------------------------------------------------------


async def test_bad_input_is_refused_with_the_field_named(shop: HttpShop) -> None:
    admin, user = await shop.admin(), await shop.signup()
    product = await shop.product(admin)
    broken = await shop.http.post(
        "/api/orders", content=b'{"items": [', headers={**user, "Content-Type": "application/json"}
    )
    assert error_of(broken)[:2] == (400, "bad_request")
    # A route that takes no body still refuses one that is not JSON, and acts on nothing.
    order_id = await shop.order(user, (product, 1))
    cancel = await shop.http.post(f"/api/orders/{order_id}/cancel", content=b"{", headers=user)
    assert error_of(cancel)[:2] == (400, "bad_request")
    huge = b'{"name": "' + b"x" * (10 << 20) + b'"}'
    assert error_of(await shop.http.post("/api/users", content=huge))[:2] == (413, "body_too_large")

    def order(items: object, card: object = "tok_ok") -> dict[str, object]:
        return {"items": items, "card_token": card}

    cases = {
        "items": order([]),
        "items[0].quantity": order([{"product_id": product, "quantity": 0}]),
        "quantity": order([{"product_id": product, "quantity": -3}]),
        "product_id": order([{"product_id": 999999, "quantity": 1}]),
        "card_token": order([{"product_id": product, "quantity": 1}], card=12),
        "items.": order("three teapots"),
    }
    for field, body in cases.items():
        answer = await shop.http.post("/api/orders", json=body, headers=user)
        status, code, message = error_of(answer)
        assert (status, code) == (422, "invalid_argument"), (field, answer.text)
        assert field.rstrip(".") in message, (field, message)
    missing = await shop.http.post("/api/users", json={"email": "x@example.com", "name": "X"})
    assert error_of(missing)[0] == 422
    assert "password" in error_of(missing)[2]
    typed = await shop.http.post(
        "/api/products",
        json={"name": "pot", "price_cents": "ten", "category": "tea"},
        headers=admin,
    )
    assert error_of(typed)[0] == 422
    assert "price_cents" in error_of(typed)[2]
    # Beyond what a database id holds: refused, not an overflow in the driver (a 500).
    huge = 2**63 + 1
    for path in (f"/api/products/{huge}", f"/api/orders/{huge}", f"/api/orders/{huge}/payment"):
        assert error_of(await shop.http.get(path, headers=user))[0] == 422, path
    huge_line = order([{"product_id": huge, "quantity": 1}])
    answer = await shop.http.post("/api/orders", json=huge_line, headers=user)
    assert "items[0].product_id" in error_of(answer)[2]
    nul = {"email": "nul@example.com", "password": "correct horse", "name": "a\x00b"}
    assert error_of(await shop.http.post("/api/users", json=nul))[0] == 422
    # Nothing was made by any of it but the one order, which was not cancelled.
    listed = (await shop.http.get("/api/orders", headers=user)).json()["items"]
    assert [(order["id"], order["cancel_reason"]) for order in listed] == [(order_id, None)]


async def test_odd_input_is_a_4xx_never_a_5xx(shop: HttpShop) -> None:
    admin, user = await shop.admin(), await shop.signup()
    product = await shop.product(admin)
    order = await shop.order(user, (product, 1))
    both = {**admin, "Content-Type": "application/json"}
    # Nesting deep enough to exhaust a recursive decoder, well under the size limit.
    deep = b"[" * 100_000 + b"]" * 100_000
    for path in ("/api/users", "/api/products", "/api/orders", f"/api/products/{product}/stock"):
        assert error_of(await shop.http.post(path, content=deep, headers=both))[0] == 400, path
    # An id is ASCII digits: not blanks, signs, underscores or other scripts' digits.
    for ident in (f"+{order}", f" {order}", f"{order}_0", "\u0661", "\uff11", "9" * 5000):
        for path in (f"/api/orders/{ident}", f"/api/products/{ident}/stock"):
            answer = await shop.http.get(path, headers=user)
            assert error_of(answer)[0] == 422, (path, answer.text)
    odd_queries = (
        "/api/products?limit=1&limit=2",
        "/api/products?limit=-5",
        f"/api/products?limit={10**30}",
        "/api/products?cursor=not.issued",
        "/api/orders?limit=0",
    )
    for path in odd_queries:
        answer = await shop.http.get(path, headers=user)
        assert error_of(answer)[0] == 422, (path, answer.text)
    line = {"product_id": product, "quantity": 1}
    odd_orders = (
        {"items": [{**line, "quantity": 10**30}], "card_token": "tok_ok"},
        {"items": [{**line, "quantity": None}], "card_token": "tok_ok"},
        {"items": {"product_id": product}, "card_token": "tok_ok"},
        {"items": [[product, 1]], "card_token": "tok_ok"},
        {"items": [line], "card_token": "\u6f22\u5b57\u0000"},
        {"items": [line], "card_token": None},
    )
    for body in odd_orders:
        answer = await shop.http.post("/api/orders", json=body, headers=user)
        assert error_of(answer)[0] == 422, (body, answer.text)
    assert [
        o["id"] for o in (await shop.http.get("/api/orders", headers=user)).json()["items"]
    ] == [order]


async def test_a_client_that_hangs_up_mid_body_is_not_a_server_error(shop: HttpShop) -> None:
    host, port = shop.http.base_url.host, shop.http.base_url.port
    assert port is not None
    for _ in range(3):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /api/users HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"email": '
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def counted() -> str:
        """The gateway's request counts of the route, once it has counted all three."""
        async with asyncio.timeout(10):
            while True:
                metrics = (await shop.http.get("/metrics")).text
                lines = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith('flotilla_gateway_requests_total{route="POST /api/users"')
                ]
                if sum(float(line.rsplit(" ", 1)[1]) for line in lines) >= 3:
                    return "\n".join(lines)
                await asyncio.sleep(0.05)

    lines = await counted()
    assert 'status="400"' in lines
    assert 'status="500"' not in lines


# -- the order flow -------------------------------------------------------------------------


async def test_a_good_order_is_confirmed_paid_shipped_and_delivered(shop: HttpShop) -> None:
    admin, user = await shop.admin(), await shop.signup()
    product = await shop.product(admin, stock=5, price=700)
    order = await shop.order(user, (product, 2))
    settled = await shop.settled_order(user, order)
    assert settled == {
        **settled,
        "id": order,
        "status": "confirmed",
        "total_cents": 1400,
        "cancel_reason": None,
    }
    assert [(i["product_id"], i["quantity"]) for i in settled["items"]] == [(product, 2)]
    payment = (await shop.http.get(f"/api/orders/{order}/payment", headers=user)).json()
    assert {k: payment[k] for k in ("order_id", "status", "amount_cents")} == {
        "order_id": order,
        "status": "captured",
        "amount_cents": 1400,
    }
    stock = (await shop.http.get(f"/api/products/{product}/stock")).json()
    assert (stock["available"], stock["reserved"], stock["sold"]) == (3, 0, 2)

    shipped = await shop.http.post(f"/api/orders/{order}/ship", headers=admin)
    assert shipped.status_code == 200
    assert shipped.json()["status"] == "shipped"
    cancel = await shop.http.post(f"/api/orders/{order}/cancel", headers=user)
    assert error_of(cancel)[0] == 409
    delivered = await shop.http.post(f"/api/orders/{order}/deliver", headers=admin)
    assert delivered.json()["status"] == "delivered"
    assert error_of(await shop.http.post(f"/api/orders/{order}/cancel", headers=user))[0] == 409
    assert error_of(await shop.http.post(f"/api/orders/{order}/ship", headers=admin))[0] == 409
    await shop.kit.settled()
    assert await shop.notifications(user) == [(order, "order_confirmed"), (order, "order_shipped")]


async def test_declined_and_out_of_stock_orders_are_cancelled(shop: HttpShop) -> None:
    admin, user = await shop.admin(), await shop.signup()
    product = await shop.product(admin, stock=3)
    declined = await shop.order(user, (product, 1), card="tok_decline")
    short = await shop.order(user, (product, 4))
    assert (await shop.settled_order(user, declined))["cancel_reason"] == "payment_declined"
    assert (await shop.settled_order(user, short))["cancel_reason"] == "out_of_stock"
    payment = await shop.http.get(f"/api/orders/{declined}/payment", headers=user)
    assert payment.json()["status"] == "declined"
    assert error_of(await shop.http.get(f"/api/orders/{short}/payment", headers=user))[0] == 404
    await shop.kit.settled()
    stock = (await shop.http.get(f"/api/products/{product}/stock")).json()
    assert (stock["available"], stock["reserved"], stock["sold"]) == (3, 0, 0)
    assert await shop.notifications(user) == sorted(
        [(declined, "order_cancelled"), (short, "order_cancelled")]
    )
    listed = (await shop.http.get("/api/orders", headers=user)).json()["items"]
    assert [o["id"] for o in listed] == [short, declined]  # newest first
    latest = await shop.http.get("/api/orders", params={"limit": 1}, headers=user)
    assert [o["id"] for o in latest.json()["items"]] == [short]


async def test_cancelling_a_confirmed_order_refunds_it_and_frees_its_stock(shop: HttpShop) -> None:
    admin, user = await shop.admin(), await shop.signup()
    product = await shop.product(admin, stock=5)
    order = await shop.order(user, (product, 3))
    assert (await shop.settled_order(user, order))["status"] == "confirmed"
    cancelled = await shop.http.post(f"/api/orders/{order}/cancel", headers=user)
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["cancel_reason"]) == (
        "cancelled",
        "user_cancelled",
    )
    again = await shop.http.post(f"/api/orders/{order}/cancel", headers=user)
    assert error_of(again)[:2] == (409, "failed_precondition")
    await shop.kit.settled()
    payment = (await shop.http.get(f"/api/orders/{order}/payment", headers=user)).json()
    assert payment["status"] == "refunded"
    stock = (await shop.http.get(f"/api/products/{product}/stock")).json()
    assert (stock["available"], stock["reserved"], stock["sold"]) == (5, 0, 0)
    assert await shop.notifications(user) == [
        (order, "order_cancelled"),
        (order, "order_confirmed"),
    ]


async def test_an_idempotency_key_makes_one_order(shop: HttpShop) -> None:
    admin, ada, bob = await shop.admin(), await shop.signup(), await shop.signup()
    product = await shop.product(admin)
    body = {"items": [{"product_id": product, "quantity": 1}], "card_token": "tok_ok"}
    key = {"Idempotency-Key": "checkout-1"}
    first = await shop.http.post("/api/orders", json=body, headers={**ada, **key})
    repeat = await shop.http.post("/api/orders", json=body, headers={**ada, **key})
    assert first.status_code == repeat.status_code == 202
    assert repeat.json()["id"] == first.json()["id"]
    other = {**body, "card_token": "tok_decline"}
    conflict = await shop.http.post("/api/orders", json=other, headers={**ada, **key})
    assert error_of(conflict)[0] == 409
    # Per user: Bob's same key is his own order.
    bobs = await shop.http.post("/api/orders", json=body, headers={**bob, **key})
    assert bobs.status_code == 202
    assert bobs.json()["id"] != first.json()["id"]
    assert len((await shop.http.get("/api/orders", headers=ada)).json()["items"]) == 1


# -- operations -----------------------------------------------------------------------------


async def test_operations_routes_and_the_openapi_document(shop: HttpShop) -> None:
    assert (await shop.http.get("/healthz")).status_code == 200
    assert (await shop.http.get("/readyz")).status_code == 200
    metrics = await shop.http.get("/metrics")
    assert metrics.status_code == 200
    assert "# TYPE" in metrics.text
    assert (await shop.http.get("/docs")).status_code == 200
    document = (await shop.http.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    for route in ROUTES:
        assert route.method.lower() in document["paths"][route.template], route.name
    place = document["paths"]["/api/orders"]["post"]
    body = place["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["items", "card_token"]
    assert [p["name"] for p in place["parameters"]] == ["Idempotency-Key"]
    assert "202" in place["responses"]

"""The shop behind its gateway, over real HTTP: the six services on a Cluster, the gateway
served by uvicorn on a free port, and an httpx client that signs up and logs in as people do."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from shop.routes import ROUTES
from shop.users import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD
from tests.examples.shop.kit import ShopKit, running_shop

from flotilla.gateway import Gateway, GatewayConfig, TokenSettings
from flotilla.gateway.server import HttpServer

SECRET = "shop-http-test-secret-of-enough-bytes"
TOKENS = TokenSettings(secret=SECRET)
PASSWORD = "correct horse"


class HttpShop:
    """The client side of the test: ``http`` is the client; helpers sign up, log in, wait."""

    def __init__(self, kit: ShopKit, http: httpx.AsyncClient) -> None:
        self.kit = kit
        self.http = http
        self._emails = itertools.count(1)

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, str]:
        """The ``Authorization`` header of a token for this account."""
        answer = await self.http.post(
            "/api/auth/token", json={"email": email, "password": password}
        )
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    async def admin(self) -> dict[str, str]:
        return await self.login(DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD)

    async def signup(self, name: str = "Ada") -> dict[str, str]:
        """A new account, logged in: its ``Authorization`` header."""
        email = f"customer{next(self._emails)}@example.com"
        made = await self.http.post(
            "/api/users", json={"email": email, "password": PASSWORD, "name": name}
        )
        assert made.status_code == 201, made.text
        return await self.login(email)

    async def product(self, admin: dict[str, str], stock: int = 10, price: int = 1000) -> int:
        body = {"name": "teapot", "price_cents": price, "category": "tea", "initial_stock": stock}
        made = await self.http.post("/api/products", json=body, headers=admin)
        assert made.status_code == 201, made.text
        return int(made.json()["id"])

    async def order(
        self, user: dict[str, str], *lines: tuple[int, int], card: str = "tok_ok"
    ) -> int:
        items = [{"product_id": p, "quantity": q} for p, q in lines]
        answer = await self.http.post(
            "/api/orders", json={"items": items, "card_token": card}, headers=user
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "pending"
        return int(answer.json()["id"])

    async def settled_order(
        self, user: dict[str, str], order_id: int, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The order once the saga has moved it out of ``pending`` (polled, with a deadline)."""
        async with asyncio.timeout(timeout):
            while True:
                answer = await self.http.get(f"/api/orders/{order_id}", headers=user)
                assert answer.status_code == 200, answer.text
                if answer.json()["status"] != "pending":
                    return dict(answer.json())
                await asyncio.sleep(0.02)

    async def notifications(self, user: dict[str, str]) -> list[tuple[int, str]]:
        answer = await self.http.get("/api/notifications", headers=user)
        assert answer.status_code == 200, answer.text
        return sorted((n["order_id"], n["kind"]) for n in answer.json()["items"])


@asynccontextmanager
async def http_shop(**options: Any) -> AsyncIterator[HttpShop]:
    """The shop and its gateway (``GatewayConfig(**options)``, no rate limit by default)."""
    options.setdefault("tokens", TOKENS)
    options.setdefault("rate_limit", None)
    async with running_shop() as kit:
        gateway = Gateway(kit.cluster.client_node, ROUTES, GatewayConfig(**options))
        server = HttpServer(gateway.app)
        await server.start()
        try:
            await gateway.start()
            async with httpx.AsyncClient(base_url=f"http://{server.address}") as http:
                yield HttpShop(kit, http)
        finally:
            await server.stop()
            await gateway.aclose()

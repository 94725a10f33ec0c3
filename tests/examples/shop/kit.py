"""The shop's test kit: the six services on a :class:`~flotilla.testing.Cluster`, and users.

Every service runs on a node of its own with its database in memory (SQLite)
and the cluster's memory events, so a test sees the real saga: RPC over
loopback, outbox relays, consumers and inboxes.  A test acts as a user through
a context carrying that user's principal, as the gateway's calls will.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from shop.auth import ADMIN
from shop.catalog import Catalog, Product
from shop.invariants import Snapshot, admin_context, read_snapshot, violations
from shop.inventory import Inventory, Stock
from shop.notifications import Notifications
from shop.orders import ItemRequest, Order, Orders
from shop.passwords import ScryptCost
from shop.payments import Payments
from shop.users import Users

from flotilla import Context, Database, Node, NodeConfig, Service
from flotilla.headers import Headers, Principal
from flotilla.testing import Cluster, FakeClock

CHEAP_KDF = ScryptCost(log_n=4, r=8, p=1)
"""Tests create many users: a real cost would spend seconds on each."""

TERMINAL = ("confirmed", "cancelled", "shipped", "delivered")


class ShopKit:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.admin = admin_context(cluster.client_node)
        self._emails = itertools.count(1)

    def as_user(self, subject: str, *roles: str) -> Context:
        """A root context acting for ``subject`` (what the gateway makes of a valid token)."""
        headers = Headers(principal=Principal(subject, roles))
        return Context(self.cluster.client_node.caller, headers)

    def node_of(self, service: type[Service]) -> Node:
        [node] = [n for n in self.cluster.nodes if any(isinstance(s, service) for s in n.services)]
        return node

    def anonymous(self) -> Context:
        return Context(self.cluster.client_node.caller, Headers())

    async def signup(self, name: str = "Ada") -> Context:
        """A new user, signed in: a context acting for them."""
        email = f"user{next(self._emails)}@example.com"
        users = self.cluster.client(Users)
        await users.create(email=email, password="correct horse", name=name)
        claims = await users.authenticate(email=email, password="correct horse")
        return self.as_user(claims.sub, *claims.roles)

    async def product(self, stock: int = 10, price_cents: int = 1000, category: str = "tea") -> int:
        created: Product = await self.admin.client(Catalog).create(
            name="teapot", price_cents=price_cents, category=category, initial_stock=stock
        )
        return created.id

    async def order(
        self, user: Context, *lines: tuple[int, int], card: str = "tok_ok", key: str | None = None
    ) -> int:
        items = [ItemRequest(product_id=p, quantity=q) for p, q in lines]
        accepted = await user.client(Orders).create(
            items=items, card_token=card, idempotency_key=key
        )
        assert accepted.status == "pending" or key is not None
        return int(accepted.id)

    async def stock(self, product_id: int) -> Stock:
        result: Stock = await self.cluster.client(Inventory).stock(product_id=product_id)
        return result

    async def get(self, user: Context, order_id: int) -> Order:
        result: Order = await user.client(Orders).get(id=order_id)
        return result

    async def payment(self, user: Context, order_id: int) -> Any:
        return await user.client(Payments).get(order_id=order_id)

    async def kinds(self, user: Context) -> list[tuple[int, str]]:
        listed = await user.client(Notifications).list_own()
        return sorted((n.order_id, n.kind) for n in listed.items)

    async def settled(self, timeout: float = 10.0) -> Snapshot:
        """Wait until the saga is quiet and every invariant holds; the snapshot then.

        Polls (the saga has no single event that says "done"), moving a fake
        clock on a second per poll; a timeout fails with the violations still standing.
        """
        problems: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    snapshot = await read_snapshot(self.admin)
                    problems = violations(snapshot)
                    if not problems:
                        return snapshot
                    await asyncio.sleep(0.02)
                    if isinstance(self.cluster.clock, FakeClock):
                        await self.cluster.clock.advance(1.0)  # due redeliveries come back
        except TimeoutError:
            raise AssertionError(f"the shop did not settle: {problems}") from None


SERVICES: tuple[type[Service], ...] = (Users, Catalog, Inventory, Orders, Payments, Notifications)

Where = Callable[[str], tuple[str, dict[str, Any]]]
"""A service's name -> the URL and engine options of its database."""


@asynccontextmanager
async def running_shop(
    config: NodeConfig | None = None,
    *,
    limit_cents: int | None = None,
    databases: Where | None = None,
    clock: FakeClock | None = None,
) -> AsyncIterator[ShopKit]:
    """The six services on a cluster.

    ``config``: the nodes' (a data directory, say, for databases that outlive a
    node); ``limit_cents``: the payment limit; ``databases``: where each
    service's database is (default: in memory, or in the data directory).
    """
    async with Cluster(config, clock=clock) as cluster:
        for service in SERVICES:
            cls = service if databases is None else _placed(service, *databases(service.name))
            if cls.name == "users":
                await cluster.add(cls(cost=CHEAP_KDF))  # type: ignore[call-arg]
            elif cls.name == "payments":
                await cluster.add(cls(limit_cents=limit_cents))  # type: ignore[call-arg]
            else:
                await cluster.add(cls())
        yield ShopKit(cluster)


def _placed(service: type[Service], url: str, options: dict[str, Any]) -> type[Service]:
    """``service`` with its database declared at ``url`` (a subclass of the same name)."""
    declared: Database = service.db  # type: ignore[attr-defined]
    database = Database(url, metadata=declared.metadata, engine_options=options)
    return type(service.__name__, (service,), {"db": database}, name=service.name)


__all__ = ["ADMIN", "TERMINAL", "ShopKit", "running_shop"]

"""``python -m shop.load``: open-loop load on the shop's gateway, then its invariants.

Requests arrive at ``--rate`` a second for ``--seconds``, each started at its
scheduled time whatever the others are doing (open loop), and its latency is
measured from that time: a system that falls behind cannot hide it by slowing
the arrivals.  The mix, over a pool of users and products made first, is the
public reference shops' (55 % product views), with 1 % of the views turned
into cancellations so the refund branch runs too::

    product view 54 %   listing 10 %   stock read 13 %   order creation 13 %
    order read 5 %   login 4 %   cancel 1 %

Every saga branch runs: a tenth of the cards are declined, and a few products
(``--scarce``) have two units only, so orders for them soon end out of stock.

A live line shows progress; then a table per route (requests, throughput,
error rate, p50/p90/p99), the generator's own lag behind its schedule (it says
when it could not keep up), the orders by final state, and the invariants once
the orders settle (read over RPC with the system's registry and secret:
``FLOTILLA_DATA_DIR``, by default ``examples/shop/.flotilla``).  When no shop
answers at ``--url``, one is started for the run (data in a temporary
directory) and stopped after, unless ``--no-start``.  Exit status 0 when
nothing failed and the invariants hold.

The requests go through :class:`~shop.load_http.LeanClient` (h11 on kept-alive
connections, about a tenth of httpx's CPU per request), so the generator
keeps its schedule on the machine it shares with the shop; httpx only makes
the pool beforehand.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live

from flotilla import Node, NodeConfig
from flotilla.runtime.serve import run_loop
from flotilla.runtime.settings import Settings

from .invariants import admin_context, check_invariants, read_snapshot
from .journey import ADMIN_EMAIL, ADMIN_PASSWORD
from .launch import SHOP_DIR, is_ready, start, stop, wait_ready
from .load_http import HttpFailure, LeanClient
from .load_stats import Recorder, states_table

__all__ = ["MIX", "LoadResult", "Pool", "main", "run", "run_load"]

MIX = {"view": 54, "list": 10, "stock": 13, "order": 13, "read": 5, "login": 4, "cancel": 1}
EXPECTED = {"order": (202,), "cancel": (200, 409)}
"""The statuses that are right for a kind of request (else 200 only)."""
DECLINED_SHARE = 0.1
"""Of the orders, those paid with ``tok_decline``."""
AMPLE_STOCK = 1_000_000
SCARCE_STOCK = 2
"""Units of each scarce product: a few orders (of 1 to 3 units) sell it out."""
QUANTITIES = (1, 1, 1, 2, 3)
SETTLE_SECONDS = 60.0
PASSWORD = "load password"


class Pool:
    """The users (with their tokens) and products the requests pick from."""

    def __init__(
        self, emails: list[str], tokens: list[str], products: list[int], scarce: list[int]
    ) -> None:
        self.emails, self.tokens = emails, tokens
        self.products = products + scarce
        """Every product of the run; the ``scarce`` ones have two units each."""
        self.scarce = scarce
        self.orders: list[tuple[int, int]] = []  # (user index, order id) placed so far


class LoadResult:
    def __init__(
        self, recorder: Recorder, elapsed: float, violations: list[str], states: Counter[str]
    ) -> None:
        self.recorder, self.elapsed, self.violations = recorder, elapsed, violations
        self.states = states
        """The run's orders by final state: ``confirmed``, ``cancelled out_of_stock``, ..."""


async def make_pool(http: httpx.AsyncClient, users: int, products: int, scarce: int = 0) -> Pool:
    """Products (``scarce`` of them with two units, the others ample) and users logged in,
    made through the gateway."""
    admin = await _token(http, ADMIN_EMAIL, ADMIN_PASSWORD)
    ids: list[int] = []
    scarce_ids: list[int] = []
    for number in range(products + scarce):
        few = number >= products
        body = {
            "name": f"load {'scarce ' if few else ''}item {number}",
            "price_cents": 100 + number,
            "category": "load",
            "initial_stock": SCARCE_STOCK if few else AMPLE_STOCK,
        }
        answer = await http.post("/api/products", json=body, headers=_bearer(admin))
        (scarce_ids if few else ids).append(answer.raise_for_status().json()["id"])
    run = secrets.token_hex(3)  # the shop's data outlives a run: fresh accounts each time
    emails = [f"load.{run}.{number}@example.com" for number in range(users)]
    for email in emails:
        account = {"email": email, "password": PASSWORD, "name": "Load"}
        (await http.post("/api/users", json=account)).raise_for_status()
    tokens = [await _token(http, email, PASSWORD) for email in emails]
    return Pool(emails, tokens, ids, scarce_ids)


class Requests:
    """One method per kind of request; each returns the status it got (see ``EXPECTED``)."""

    def __init__(self, http: LeanClient, pool: Pool, rng: random.Random) -> None:
        self.http, self.pool, self.rng = http, pool, rng

    def pick(self) -> tuple[str, Callable[[], Awaitable[int]]]:
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        return kind, getattr(self, f"_{kind}")

    async def _view(self) -> int:
        return await self._get(f"/api/products/{self.rng.choice(self.pool.products)}")

    async def _list(self) -> int:
        return await self._get("/api/products?limit=20")

    async def _stock(self) -> int:
        return await self._get(f"/api/products/{self.rng.choice(self.pool.products)}/stock")

    async def _order(self) -> int:
        user = self.rng.randrange(len(self.pool.tokens))
        card = "tok_decline" if self.rng.random() < DECLINED_SHARE else "tok_ok"
        product, quantity = self.rng.choice(self.pool.products), self.rng.choice(QUANTITIES)
        items = [{"product_id": product, "quantity": quantity}]
        body = {"items": items, "card_token": card}
        answer = await self.http.request("POST", "/api/orders", body, self._auth(user))
        if answer.status == 202:
            self.pool.orders.append((user, answer.json()["id"]))
        return answer.status

    async def _read(self) -> int:
        if not self.pool.orders:
            return await self._get("/api/orders", headers=self._auth(0))
        user, order = self.rng.choice(self.pool.orders)
        return await self._get(f"/api/orders/{order}", headers=self._auth(user))

    async def _cancel(self) -> int:
        """Cancel one of the orders placed so far, as its owner: 200, or 409 when the saga
        (or an earlier cancel) ended it already."""
        if not self.pool.orders:
            return await self._get("/api/orders", headers=self._auth(0))
        user, order = self.rng.choice(self.pool.orders)
        answer = await self.http.request(
            "POST", f"/api/orders/{order}/cancel", headers=self._auth(user)
        )
        return answer.status

    async def _login(self) -> int:
        body = {"email": self.rng.choice(self.pool.emails), "password": PASSWORD}
        return (await self.http.request("POST", "/api/auth/token", body)).status

    async def _get(self, path: str, headers: dict[str, str] | None = None) -> int:
        return (await self.http.request("GET", path, headers=headers)).status

    def _auth(self, user: int) -> dict[str, str]:
        return _bearer(self.pool.tokens[user])


async def drive(
    requests: Requests, rate: float, seconds: float, recorder: Recorder, console: Console
) -> float:
    """Start each request at its scheduled time; returns the elapsed seconds once all ended."""
    loop = asyncio.get_running_loop()
    total, start = round(rate * seconds), loop.time()

    async def one(kind: str, send: Callable[[], Awaitable[int]], scheduled: float) -> None:
        recorder.started(loop.time() - scheduled)  # the generator's own lag, if any
        try:
            status = await send()
        except HttpFailure:
            status = 0  # refused, reset or timed out: an error of this route
        ok = status in EXPECTED.get(kind, (200,))
        recorder.record(kind, loop.time() - scheduled, ok, status)

    shown = start
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        async with asyncio.TaskGroup() as group:
            for index in range(total):
                scheduled = start + index / rate
                await asyncio.sleep(max(0.0, scheduled - loop.time()))
                group.create_task(one(*requests.pick(), scheduled))
                if (now := loop.time()) - shown >= 0.25:  # the line, not every request
                    live.update(recorder.progress(index + 1, now - start))
                    shown = now
    return loop.time() - start


async def settle(settings: Settings, placed: set[int]) -> tuple[list[str], Counter[str]]:
    """The invariants once every order has left pending (or the last violations seen), and
    the ``placed`` orders by final state."""
    async with Node(config=NodeConfig(registry=settings.registry, secret=settings.secret)) as node:
        admin, loop = admin_context(node), asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        # The sagas run in other processes: nothing to await but a poll.
        while (found := await check_invariants(admin)) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        orders = (await read_snapshot(admin)).orders
    states = Counter(
        f"{order.status} {order.cancel_reason}" if order.cancel_reason else order.status
        for order in orders
        if order.id in placed
    )
    return found, states


async def run_load(options: argparse.Namespace, settings: Settings, console: Console) -> LoadResult:
    async with httpx.AsyncClient(base_url=options.url, timeout=30.0) as setup:
        console.print(
            f"making {options.users} users and {options.products} products"
            f" (+{options.scarce} with {SCARCE_STOCK} units each) ..."
        )
        pool = await make_pool(setup, options.users, options.products, options.scarce)
    recorder = Recorder()
    http = LeanClient(options.url, connections=options.connections)
    requests = Requests(http, pool, random.Random(options.seed))
    console.print(f"{options.rate:g} requests a second for {options.seconds:g} s ...")
    cpu = time.process_time()
    try:
        elapsed = await drive(requests, options.rate, options.seconds, recorder, console)
    finally:
        cpu = time.process_time() - cpu
        await http.aclose()
    console.print(recorder.table(elapsed))
    console.print(recorder.lag_line(cpu), style=None if recorder.kept_up else "bold yellow")
    console.print("letting the orders settle, then checking the invariants ...")
    violations, states = await settle(settings, {order for _, order in pool.orders})
    console.print(states_table(states))
    for violation in violations:
        console.print(f"  [red]-[/] {violation}")
    console.print("[bold green]invariants hold[/]" if not violations else "[bold red]violated[/]")
    return LoadResult(recorder, elapsed, violations, states)


@asynccontextmanager
async def shop_at(
    options: argparse.Namespace, env: dict[str, str], console: Console
) -> AsyncIterator[Settings]:
    """The settings of the shop at ``options.url``: the one answering there, else (unless
    ``--no-start``) one started for the run on that port, stopped after."""
    async with httpx.AsyncClient(base_url=options.url, timeout=5.0) as http:
        if await is_ready(http):
            env.setdefault("FLOTILLA_DATA_DIR", str(SHOP_DIR / ".flotilla"))
            yield Settings.from_env(env)
            return
        port = httpx.URL(options.url).port
        if options.no_start or port is None:
            raise SystemExit(f"no shop answers at {options.url} (start one with `make demo`)")
        with tempfile.TemporaryDirectory(prefix="shop-load-") as data:
            env.update(FLOTILLA_DATA_DIR=data, FLOTILLA_GATEWAY_PORT=str(port))
            settings = Settings.from_env(env)  # the secret first: the shop reads the same one
            console.print(f"no shop at {options.url}: starting one (data and run.log in {data})")
            system = start(Path(data), env, Path(data) / "run.log")
            try:
                await wait_ready(http, system)
                yield settings
            finally:
                console.print(f"stopping the shop: exit status {stop(system)}")


async def run(options: argparse.Namespace, console: Console) -> int:
    async with shop_at(options, dict(os.environ), console) as settings:
        result = await run_load(options, settings, console)
    return 0 if result.recorder.failed == 0 and not result.violations else 1


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m shop.load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway")
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--products", type=int, default=20, help="with ample stock")
    parser.add_argument("--scarce", type=int, default=4, help=f"products of {SCARCE_STOCK} units")
    parser.add_argument("--connections", type=int, default=100, help="HTTP connections at most")
    parser.add_argument("--seed", type=int, default=None, help="for a repeatable mix")
    parser.add_argument(
        "--no-start", action="store_true", help="fail when no shop answers at --url"
    )
    options = parser.parse_args(argv)
    if options.rate <= 0 or options.seconds <= 0 or options.users < 1 or options.products < 1:
        parser.error("--rate and --seconds must be positive, --users and --products at least 1")
    if options.scarce < 0:
        parser.error("--scarce must be 0 or more")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    return run_loop(run(options, Console()))


async def _token(http: httpx.AsyncClient, email: str, password: str) -> str:
    answer = await http.post("/api/auth/token", json={"email": email, "password": password})
    token: str = answer.raise_for_status().json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


if __name__ == "__main__":
    sys.exit(main())

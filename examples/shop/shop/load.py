"""``python -m shop.load``: open-loop load on a running shop's gateway, then its invariants.

Requests arrive at ``--rate`` a second for ``--seconds``, each started at its
scheduled time whatever the others are doing (open loop), and its latency is
measured from that time: a system that falls behind cannot hide it by slowing
the arrivals.  The mix, over a pool of users and products made first::

    product view 55 %   listing 10 %   stock read 13 %
    order creation 13 %   order read 5 %   login 4 %

A live line shows progress; then a table per route (requests, throughput,
error rate, p50/p90/p99), and the invariants once the orders settle (read
over RPC with the system's registry and secret: ``FLOTILLA_DATA_DIR``, by
default ``examples/shop/.flotilla``).  Exit status 0 when nothing failed and
the invariants hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live

from flotilla import Node, NodeConfig
from flotilla.runtime.serve import run_loop
from flotilla.runtime.settings import Settings

from .invariants import admin_context, check_invariants
from .journey import ADMIN_EMAIL, ADMIN_PASSWORD
from .load_stats import Recorder

__all__ = ["MIX", "LoadResult", "Pool", "main", "run_load"]

MIX = {"view": 55, "list": 10, "stock": 13, "order": 13, "read": 5, "login": 4}
SETTLE_SECONDS = 60.0
PASSWORD = "load password"


class Pool:
    """The users (with their tokens) and products the requests pick from."""

    def __init__(self, emails: list[str], tokens: list[str], products: list[int]) -> None:
        self.emails, self.tokens, self.products = emails, tokens, products
        self.orders: list[tuple[int, int]] = []  # (user index, order id) placed so far


class LoadResult:
    def __init__(self, recorder: Recorder, elapsed: float, violations: list[str]) -> None:
        self.recorder, self.elapsed, self.violations = recorder, elapsed, violations


async def make_pool(http: httpx.AsyncClient, users: int, products: int) -> Pool:
    """Products with ample stock and users logged in, made through the gateway."""
    admin = await _token(http, ADMIN_EMAIL, ADMIN_PASSWORD)
    ids = []
    for number in range(products):
        body = {"name": f"load item {number}", "price_cents": 100 + number, "category": "load"}
        answer = await http.post(
            "/api/products", json={**body, "initial_stock": 1_000_000}, headers=_bearer(admin)
        )
        ids.append(answer.raise_for_status().json()["id"])
    run = secrets.token_hex(3)  # the shop's data outlives a run: fresh accounts each time
    emails = [f"load.{run}.{number}@example.com" for number in range(users)]
    for email in emails:
        account = {"email": email, "password": PASSWORD, "name": "Load"}
        (await http.post("/api/users", json=account)).raise_for_status()
    tokens = [await _token(http, email, PASSWORD) for email in emails]
    return Pool(emails, tokens, ids)


class Requests:
    """One method per kind of request; each says whether it got the answer it should."""

    def __init__(self, http: httpx.AsyncClient, pool: Pool, rng: random.Random) -> None:
        self.http, self.pool, self.rng = http, pool, rng

    def pick(self) -> tuple[str, Callable[[], Awaitable[bool]]]:
        kind = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        return kind, getattr(self, f"_{kind}")

    async def _view(self) -> bool:
        return await self._get(f"/api/products/{self.rng.choice(self.pool.products)}")

    async def _list(self) -> bool:
        return await self._get("/api/products", params={"limit": 20})

    async def _stock(self) -> bool:
        return await self._get(f"/api/products/{self.rng.choice(self.pool.products)}/stock")

    async def _order(self) -> bool:
        user = self.rng.randrange(len(self.pool.tokens))
        card = "tok_ok" if self.rng.random() < 0.9 else "tok_decline"
        items = [{"product_id": self.rng.choice(self.pool.products), "quantity": 1}]
        answer = await self.http.post(
            "/api/orders", json={"items": items, "card_token": card}, headers=self._auth(user)
        )
        if answer.status_code == 202:
            self.pool.orders.append((user, answer.json()["id"]))
        return answer.status_code == 202

    async def _read(self) -> bool:
        if not self.pool.orders:
            return await self._get("/api/orders", headers=self._auth(0))
        user, order = self.rng.choice(self.pool.orders)
        return await self._get(f"/api/orders/{order}", headers=self._auth(user))

    async def _login(self) -> bool:
        body = {"email": self.rng.choice(self.pool.emails), "password": PASSWORD}
        return (await self.http.post("/api/auth/token", json=body)).status_code == 200

    async def _get(
        self, path: str, params: dict[str, int] | None = None, headers: dict[str, str] | None = None
    ) -> bool:
        return (await self.http.get(path, params=params, headers=headers)).status_code == 200

    def _auth(self, user: int) -> dict[str, str]:
        return _bearer(self.pool.tokens[user])


async def drive(
    requests: Requests, rate: float, seconds: float, recorder: Recorder, console: Console
) -> float:
    """Start each request at its scheduled time; returns the elapsed seconds once all ended."""
    loop = asyncio.get_running_loop()
    total, start = round(rate * seconds), loop.time()

    async def one(kind: str, send: Callable[[], Awaitable[bool]], scheduled: float) -> None:
        try:
            ok = await send()
        except httpx.HTTPError:
            ok = False  # refused, reset or timed out: an error of this route
        recorder.record(kind, loop.time() - scheduled, ok)

    with Live(console=console, refresh_per_second=4, transient=True) as live:
        async with asyncio.TaskGroup() as group:
            for index in range(total):
                scheduled = start + index / rate
                await asyncio.sleep(max(0.0, scheduled - loop.time()))
                group.create_task(one(*requests.pick(), scheduled))
                live.update(recorder.progress(index + 1, loop.time() - start))
    return loop.time() - start


async def settled_violations(settings: Settings) -> list[str]:
    """The invariants once every order has left pending (or the last violations seen)."""
    async with Node(config=NodeConfig(registry=settings.registry, secret=settings.secret)) as node:
        admin, loop = admin_context(node), asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        # The sagas run in other processes: nothing to await but a poll.
        while (found := await check_invariants(admin)) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return found


async def run_load(options: argparse.Namespace, settings: Settings, console: Console) -> LoadResult:
    limits = httpx.Limits(max_connections=options.connections)
    async with httpx.AsyncClient(base_url=options.url, timeout=30.0, limits=limits) as http:
        console.print(f"making {options.users} users and {options.products} products ...")
        pool = await make_pool(http, options.users, options.products)
        recorder = Recorder()
        requests = Requests(http, pool, random.Random(options.seed))
        elapsed = await drive(requests, options.rate, options.seconds, recorder, console)
    console.print(recorder.table(elapsed))
    console.print("letting the orders settle, then checking the invariants ...")
    violations = await settled_violations(settings)
    for violation in violations:
        console.print(f"  [red]-[/] {violation}")
    console.print("[bold green]invariants hold[/]" if not violations else "[bold red]violated[/]")
    return LoadResult(recorder, elapsed, violations)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m shop.load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway")
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--products", type=int, default=20)
    parser.add_argument("--connections", type=int, default=100, help="HTTP connections at most")
    parser.add_argument("--seed", type=int, default=None, help="for a repeatable mix")
    options = parser.parse_args(argv)
    if options.rate <= 0 or options.seconds <= 0 or options.users < 1 or options.products < 1:
        parser.error("--rate and --seconds must be positive, --users and --products at least 1")
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    default_data = Path(__file__).resolve().parents[1] / ".flotilla"
    env.setdefault("FLOTILLA_DATA_DIR", str(default_data))
    result = run_loop(run_load(options, Settings.from_env(env), Console()))
    return 0 if result.recorder.failed == 0 and not result.violations else 1


async def _token(http: httpx.AsyncClient, email: str, password: str) -> str:
    answer = await http.post("/api/auth/token", json={"email": email, "password": password})
    token: str = answer.raise_for_status().json()["access_token"]
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


if __name__ == "__main__":
    sys.exit(main())

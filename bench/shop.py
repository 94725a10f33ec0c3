"""The shop end to end: confirmed orders a second, HTTP latencies, the gateway's overhead.

    .venv/bin/python bench/shop.py                       # 20 orders/s and 100 GETs/s, 10 s each
    .venv/bin/python bench/shop.py --order-rate 40 --seconds 5
    .venv/bin/python bench/shop.py --order-rate 40 --orders-only --profile /tmp/prof

Runs ``flotilla run examples/shop`` (embedded backends, a temporary data
directory, a free gateway port) and drives it from this process:

1. orders: ``POST /api/orders`` open-loop at ``--order-rate`` (each request
   sent at its scheduled time whether or not earlier ones answered) for
   ``--seconds``; then every accepted order is polled until terminal.  The
   figure is confirmed orders / (last order terminal - first order sent):
   it equals the offered rate when the saga keeps up and falls below it when
   a backlog builds.  p50/p99 of the POST are measured from the scheduled
   send time (no coordinated omission).  The CPU time every process of the
   shop used during the phase (``/proc``), per confirmed order, is printed
   by process; ``--profile DIR`` records each with py-spy meanwhile.
   ``--orders-only`` stops after this phase.
2. reads: ``GET /api/products/{id}`` open-loop at ``--get-rate``, p50/p99.
3. gateway overhead, one call at a time in alternating blocks (as in
   ``bench/gateway.py``, whose minimal HTTP connection this reuses):
   ``GET /api/products/{id}`` through the gateway against ``catalog.get``
   called directly from a Node in this process.  Target: p50 ratio <= 1.3.
   Also the gateway process's CPU per request, all of it and less what it
   uses idle (``bench/gateway.py``'s ``Meter``): on a busy machine the
   latencies say more about the scheduler than about the gateway.

Prints the commit, the machine's load average, each target and PASS/MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop
from _proctree import spent, tree_cpu
from _pyspy import attach, install, summary

from flotilla.runtime.node import Node, NodeConfig
from flotilla.runtime.settings import Settings
from gateway import (
    BLOCK,
    HttpConnection,
    Meter,
    Row,
    free_port,
    percentile,
    timed,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "examples" / "shop"
ADMIN = {"email": "admin@shop.example", "password": "admin-demo-password"}
OVERHEAD_TARGET = 1.3
DRAIN_TARGET = 2.0
"""Seconds after the last order is sent within which all must be terminal: the saga keeps up."""
FLOTILLA_RUN = [sys.executable, "-m", "flotilla", "run"]
POLL = 0.05
"""Seconds between two looks at an order not yet terminal."""
TERMINAL = {"confirmed", "cancelled"}


async def bearer(http: httpx.AsyncClient, email: str, password: str) -> dict[str, str]:
    answer = await http.post("/api/auth/token", json={"email": email, "password": password})
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def set_up(http: httpx.AsyncClient) -> tuple[dict[str, str], int]:
    """A buyer's headers and a product with stock for every order the bench places."""
    admin = await bearer(http, ADMIN["email"], ADMIN["password"])
    product = await http.post(
        "/api/products",
        json={"name": "kettle", "price_cents": 2500, "category": "tea", "initial_stock": 10**6},
        headers=admin,
    )
    product.raise_for_status()
    account = {"email": "bench@example.com", "password": "correct horse", "name": "Bench"}
    (await http.post("/api/users", json=account)).raise_for_status()
    return await bearer(http, account["email"], account["password"]), product.json()["id"]


async def open_loop(rate: float, seconds: float, request: Any) -> list[tuple[float, Any]]:
    """Start ``request()`` every 1/rate s for ``seconds``; (latency us, result) of each,
    latency from the scheduled start."""
    started = time.perf_counter()

    async def one(due: float) -> tuple[float, Any]:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        result = await request()
        return (time.perf_counter() - due) * 1e6, result

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(started + n / rate)) for n in range(int(rate * seconds))]
    return [task.result() for task in tasks]


async def watch(
    http: httpx.AsyncClient, buyer: dict[str, str], accepted: asyncio.Queue[str | None]
) -> dict[str, int]:
    """Poll the accepted orders one after the other until each is terminal (the saga
    settles them about in order, so one GET at a time keeps up without loading the shop)."""
    statuses: dict[str, int] = {}
    while (order_id := await accepted.get()) is not None:
        # Polled: the state is in another process.
        while (status := await order_status(http, buyer, order_id)) not in TERMINAL:  # noqa: ASYNC110
            # 20 polls a second at most: while a backlog builds, faster polling
            # would load the shop (gateway, orders) more than the orders do.
            await asyncio.sleep(POLL)
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


async def order_status(http: httpx.AsyncClient, buyer: dict[str, str], order_id: str) -> str:
    answer = await http.get(f"/api/orders/{order_id}", headers=buyer)
    answer.raise_for_status()
    status: str = answer.json()["status"]
    return status


async def bench_orders(
    http: httpx.AsyncClient,
    buyer: dict[str, str],
    product: int,
    options: argparse.Namespace,
    system: int,
) -> dict[str, Any]:
    """The order phase; CPU of every process of the ``system`` tree (pid) read around it."""
    rate, seconds = options.order_rate, options.seconds
    body = {"items": [{"product_id": product, "quantity": 1}], "card_token": "tok_ok"}
    accepted: asyncio.Queue[str | None] = asyncio.Queue()

    async def place() -> httpx.Response:
        answer = await http.post("/api/orders", json=body, headers=buyer)
        if answer.status_code == 202:
            accepted.put_nowait(answer.json()["id"])
        return answer

    cpu_before = tree_cpu(system)
    profiles = start_profiles(options.profile, cpu_before, seconds)
    first_sent = time.perf_counter()
    async with asyncio.timeout(seconds + 120):
        watcher = asyncio.create_task(watch(http, buyer, accepted))
        results = await open_loop(rate, seconds, place)
        accepted.put_nowait(None)
        statuses = await watcher
    settled = time.perf_counter() - first_sent
    cpu = spent(cpu_before, tree_cpu(system))
    latencies = [latency for latency, _ in results]
    confirmed = statuses.get("confirmed", 0)
    return {
        "sent": len(results),
        "accepted": sum(statuses.values()),
        "confirmed": confirmed,
        "confirmed_per_s": confirmed / settled,
        "settled_s": settled,
        "drain_s": settled - seconds,
        "post_p50_us": percentile(latencies, 0.5),
        "post_p99_us": percentile(latencies, 0.99),
        "cpu_s": cpu,
        "profiles": profiles,
    }


def start_profiles(
    folder: str | None, processes: dict[int, tuple[str, float]], seconds: float
) -> list[tuple[str, Path, Any]]:
    """py-spy recording each process of the shop for the order phase (``--profile``)."""
    if folder is None:
        return []
    py_spy, out = install(), Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    started = []
    for pid, (name, _) in processes.items():
        path = out / f"{name.split()[0]}-{pid}.txt"
        started.append((name, path, attach(py_spy, pid, path, seconds)))
    return started


async def bench_reads(http: httpx.AsyncClient, product: int, rate: float, seconds: float) -> Any:
    async def read() -> int:
        return (await http.get(f"/api/products/{product}")).status_code

    results = await open_loop(rate, seconds, read)
    latencies = [latency for latency, _ in results]
    errors = sum(status != 200 for _, status in results)
    return percentile(latencies, 0.5), percentile(latencies, 0.99), errors


async def bench_overhead(settings: Settings, port: int, product: int, calls: int) -> Any:
    """p50 of catalog.get through the gateway and directly, one at a time, alternating;
    and the gateway process's CPU µs per request."""
    config = NodeConfig(registry=settings.registry, secret=settings.secret)
    async with Node(config=config) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        http = HttpConnection(reader, writer)
        direct = Row("direct", lambda: node.call("catalog.get", id=product))
        gateway = Row("gateway", lambda: http.get(f"/api/products/{product}"), gateway_pid(port))
        await timed(direct.call, 200)
        await timed(gateway.call, 200)
        meter = Meter([gateway.pid] if gateway.pid else [])
        for _ in range(max(1, calls // BLOCK)):
            await meter.block(direct, BLOCK)
            await meter.block(gateway, BLOCK)
        writer.close()
    # All of the gateway's CPU per request, and less what it uses idle (Meter says why).
    cpu = Meter.per_request(gateway, [direct, gateway]) if gateway.pid else (math.nan, math.nan)
    return percentile(direct.samples, 0.5), percentile(gateway.samples, 0.5), cpu


def gateway_pid(port: int) -> int | None:
    """The process of ``flotilla gateway`` listening on ``port`` (its FLOTILLA_GATEWAY_PORT)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        ours = f"FLOTILLA_GATEWAY_PORT={port}".encode() in environ
        if ours and command.endswith(b"-m\0flotilla\0gateway\0"):
            return int(entry.name)
    return None


async def measure(settings: Settings, port: int, options: argparse.Namespace, system: int) -> None:
    await wait_ready(port, timeout=90)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
    ) as http:
        buyer, product = await set_up(http)
        orders = await bench_orders(http, buyer, product, options, system)
        if options.orders_only:
            report_orders(options, orders)
            return
        reads = await bench_reads(http, product, options.get_rate, options.seconds)
    overhead = await bench_overhead(settings, port, product, options.calls)
    report(options, orders, reads, overhead)


def report_orders(options: argparse.Namespace, orders: dict[str, Any]) -> None:
    """The commit, the load average and the order phase's lines (CPU, profiles, POST latency)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"commit {commit}; {os.cpu_count()} CPUs; load average {load}")
    keeps_up = orders["drain_s"] <= DRAIN_TARGET and orders["confirmed"] == orders["sent"]
    print(
        f"orders at {options.order_rate:g}/s for {options.seconds:g} s: sent {orders['sent']},"
        f" accepted {orders['accepted']}, confirmed {orders['confirmed']} in"
        f" {orders['settled_s']:.1f} s = {orders['confirmed_per_s']:.1f} confirmed/s;"
        f" the last settled {orders['drain_s']:.1f} s after the last was sent"
        f" (target: all confirmed, <= {DRAIN_TARGET:g} s after: {'PASS' if keeps_up else 'MISS'})"
    )
    cpu, confirmed = orders["cpu_s"], max(orders["confirmed"], 1)
    shares = ", ".join(
        f"{name} {1000 * seconds / confirmed:.1f}"
        for name, seconds in sorted(cpu.items(), key=lambda item: -item[1])
    )
    print(
        f"CPU per confirmed order, all shop processes: {1000 * sum(cpu.values()) / confirmed:.1f}"
        f" ms ({shares})"
    )
    for name, path, recorder in orders["profiles"]:
        recorder.wait(timeout=60)
        print(summary(path, 1e6 * cpu.get(name, 0.0) / confirmed, top=25))
    print(
        f"POST /api/orders at {options.order_rate:g}/s: p50 {orders['post_p50_us'] / 1000:.1f} ms,"
        f" p99 {orders['post_p99_us'] / 1000:.1f} ms"
    )


def report(options: argparse.Namespace, orders: dict[str, Any], reads: Any, overhead: Any) -> None:
    direct, gateway, gateway_cpu = overhead
    report_orders(options, orders)
    p50, p99, errors = reads
    print(
        f"GET /api/products/{{id}} at {options.get_rate:g}/s: p50 {p50 / 1000:.1f} ms,"
        f" p99 {p99 / 1000:.1f} ms, {errors} errors"
    )
    ratio = gateway / direct
    verdict = "PASS" if ratio <= OVERHEAD_TARGET else "MISS"
    print(
        f"gateway overhead, concurrency 1: GET via gateway p50 {gateway:.0f} us, catalog.get"
        f" direct p50 {direct:.0f} us, ratio {ratio:.2f}"
        f" (target <= {OVERHEAD_TARGET}: {verdict}); gateway CPU per request"
        f" {gateway_cpu[0]:.0f} us, {gateway_cpu[1]:.0f} us less its idle rate"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order-rate", type=float, default=20.0)
    parser.add_argument("--get-rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=1000, help="calls each way, overhead")
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy each shop process during the order phase"
    )
    parser.add_argument("--orders-only", action="store_true", help="the order phase alone")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-shop-") as temp:
        data, port = Path(temp) / "data", free_port()
        env = dict(os.environ, FLOTILLA_DATA_DIR=str(data), FLOTILLA_GATEWAY_PORT=str(port))
        env.pop("SHOP_JWT_SECRET", None)
        settings = Settings.from_env(env)  # makes the secret the system will read
        with (Path(temp) / "run.log").open("wb") as log:
            system = subprocess.Popen(
                [*FLOTILLA_RUN, str(SHOP), "--no-status", "--data-dir", str(data)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            uvloop.run(measure(settings, port, options, system.pid))
        finally:
            system.send_signal(signal.SIGINT)
            system.wait(timeout=60)


if __name__ == "__main__":
    main()

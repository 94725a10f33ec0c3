"""`make demo`: start the shop, walk a customer through it over HTTP, check its invariants.

Runs the shop the way a user would (`flotilla run examples/shop` in a process
of its own, data in examples/shop/.flotilla, its log in run.log there), drives
the journey of `shop.journey` against the gateway (watching the saga's events
on the system's event log, to show who published what), reads every service
over RPC to check the invariants, then leaves the shop running until Ctrl-C.  When
stdin is not a terminal or ``DEMO_EXIT=1``, it stops after the summary (CI,
tests).  Exit status: 0 when the journey went as told and the invariants hold.

``FLOTILLA_DATA_DIR`` and ``FLOTILLA_GATEWAY_PORT`` override the data directory
and the port (by default 8080, or any free port when 8080 is taken).
``FLOTILLA_REGISTRY``, ``FLOTILLA_EVENTS`` and ``FLOTILLA_DATABASE_URL`` reach
`flotilla run` as they are: set, the shop runs on those (NATS, PostgreSQL: a
schema per service); the demo reads the registry they name for the invariants.
A second run on the same servers finds the first's data: its customer is a new
one each run, and the invariants hold over every order ever placed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from shop.invariants import admin_context, check_invariants
from shop.journey import Journey, JourneyError
from shop.launch import gateway_port, start, stop, wait_ready
from shop.saga_watch import SagaWatch

from flotilla import Node, NodeConfig
from flotilla.data.url import mask
from flotilla.events import EVENT_BACKENDS
from flotilla.runtime.serve import run_loop
from flotilla.runtime.settings import Settings

HERE = Path(__file__).resolve().parent
SETTLE_SECONDS = 30.0
console = Console()


async def settled_violations(settings: Settings) -> list[str]:
    """The invariants' violations once the orders in flight settle (or the last seen)."""
    config = NodeConfig(registry=settings.registry, secret=settings.secret)
    async with Node(config=config) as node:
        admin = admin_context(node)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        # A pending order is a violation until its saga ends: poll, with a bound.
        # (The state is in other processes: nothing to await but a poll.)
        while (found := await check_invariants(admin)) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        return found


def summary(journey: Journey, violations: list[str]) -> None:
    table = Table(title="Ada's orders")
    for column in ("order", "status", "reason", "total"):
        table.add_column(column)
    for order in journey.orders:
        cents = order["total_cents"]
        total = f"${cents // 100}.{cents % 100:02d}"
        table.add_row(str(order["id"]), order["status"], order["cancel_reason"] or "", total)
    console.print(table)
    if violations:
        console.print(f"[bold red]invariants violated ({len(violations)}):[/]")
        for violation in violations:
            console.print(f"  - {violation}")
    else:
        console.print(
            "[bold green]invariants hold[/]: every order terminal; stock adds up per product;"
            " one captured payment per paid order, none for a cancelled one;"
            " one notification per order and event"
        )


async def drive(settings: Settings, url: str, system: subprocess.Popen[bytes]) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as http:
        console.print(f"waiting for the gateway at {url} ...")
        await wait_ready(http, system)
        async with SagaWatch(EVENT_BACKENDS.open(settings.events)) as watch:
            journey = Journey(http, console, watch)
            try:
                await journey.run()
            except JourneyError as error:
                console.print(f"[bold red]the journey went wrong:[/] {error}")
                return False
    console.rule("Summary")
    violations = await settled_violations(settings)
    summary(journey, violations)
    return not violations


def hold(system: subprocess.Popen[bytes], url: str) -> None:
    """Leave the shop running for the user until Ctrl-C (or until it exits by itself)."""
    console.rule("The shop is running")
    console.print(f"gateway  {url}\nAPI docs {url}/docs\n[dim]Ctrl-C to stop[/]")
    try:
        system.wait()
        console.print(f"[red]flotilla run exited by itself ({system.returncode})[/]")
    except KeyboardInterrupt:
        console.print()


def main() -> int:
    env = dict(os.environ)
    data = Path(env.setdefault("FLOTILLA_DATA_DIR", str(HERE / ".flotilla")))
    data.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{gateway_port(env)}"
    env["FLOTILLA_GATEWAY_PORT"] = url.rsplit(":", 1)[1]
    settings = Settings.from_env(env)  # makes the system's secret first: the shop reads it too
    console.rule(f"flotilla run examples/shop   (its log: {data / 'run.log'})")
    console.print(f"registry {mask(settings.registry)}, events {mask(settings.events)}")
    system = start(data, env, data / "run.log")
    try:
        ok = run_loop(drive(settings, url, system))
        interactive = sys.stdin.isatty() and env.get("DEMO_EXIT") != "1"
        if ok and interactive:
            hold(system, url)
    finally:
        console.rule("stopping the shop (SIGINT, graceful drain)")
        status = stop(system)
    console.print(f"flotilla run exited with status {status}")
    return 0 if ok and status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

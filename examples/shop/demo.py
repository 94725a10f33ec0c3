"""`make demo`: start the shop, walk a customer through it over HTTP, check its invariants.

Runs the shop the way a user would (`flotilla run examples/shop` in a process
of its own, data in examples/shop/.flotilla, its log in run.log there), drives
the journey of `shop.journey` against the gateway, reads every service over
RPC to check the invariants, then leaves the shop running until Ctrl-C.  When
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
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from shop.invariants import admin_context, check_invariants
from shop.journey import Journey, JourneyError

from flotilla import Node, NodeConfig
from flotilla.data.url import mask
from flotilla.runtime.serve import run_loop
from flotilla.runtime.settings import Settings

HERE = Path(__file__).resolve().parent
DEFAULT_PORT = 8080
START_SECONDS = 90.0  # six processes importing on a busy CI box
SETTLE_SECONDS = 30.0
console = Console()


def gateway_port(env: dict[str, str]) -> int:
    """The port asked for, else 8080 when nobody listens there, else any free port."""
    if asked := env.get("FLOTILLA_GATEWAY_PORT"):
        return int(asked)
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            probe.bind(("127.0.0.1", 0))  # taken: any free one (the gateway binds it next)
        port: int = probe.getsockname()[1]
        return port


async def wait_until_up(http: httpx.AsyncClient, system: subprocess.Popen[bytes]) -> None:
    """Until the gateway's ``/readyz`` answers 200; fails at once if the system exited."""
    async with asyncio.timeout(START_SECONDS):
        while system.poll() is None:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.1)
    raise RuntimeError(f"flotilla run exited with status {system.returncode}")


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
        await wait_until_up(http, system)
        journey = Journey(http, console)
        try:
            await journey.run()
        except JourneyError as error:
            console.print(f"[bold red]the journey went wrong:[/] {error}")
            return False
    console.rule("Summary")
    violations = await settled_violations(settings)
    summary(journey, violations)
    return not violations


def stop(system: subprocess.Popen[bytes]) -> int:
    """SIGINT (a graceful drain), then its exit status; killed if it hangs."""
    if system.poll() is None:
        system.send_signal(signal.SIGINT)
    try:
        return system.wait(timeout=30)
    except subprocess.TimeoutExpired:
        system.kill()
        return system.wait()


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
    with (data / "run.log").open("ab") as log:
        # Its own session: Ctrl-C reaches this process only, which stops the shop once.
        system = subprocess.Popen(
            [sys.executable, "-m", "flotilla", "run", str(HERE), "--no-status", "--data-dir", data],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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

"""`make demo`: start the hello system, call it, show which replica answered, stop it.

Runs the system the way a user would (`flotilla run examples/hello` in a
process of its own), then calls it from this process as an outside client.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flotilla import Node, NodeConfig
from flotilla.registry import open_registry
from flotilla.runtime.serve import run_loop
from flotilla.runtime.settings import Settings

HERE = Path(__file__).resolve().parent
NAMES = ["Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Tony", "Margaret"]
console = Console()


async def wait_for_instances(settings: Settings, expected: dict[str, int]) -> None:
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(30):
            while True:
                live = collections.Counter(i.service for i in await registry.list())
                if all(live[name] >= count for name, count in expected.items()):
                    return
                await asyncio.sleep(0.2)
    finally:
        await registry.aclose()


async def exercise(settings: Settings) -> None:
    await wait_for_instances(settings, {"greeter": 2, "front": 1})
    config = NodeConfig(registry=settings.registry, secret=settings.secret)
    async with Node(config=config) as client:
        greetings = await client.call("front.greet", names=NAMES)
        table = Table(title="front.greet -> greeter.hello, balanced over 2 replicas")
        table.add_column("greeting")
        table.add_column("answered by")
        for greeting in greetings:
            table.add_row(greeting["text"], greeting["replica"])
        console.print(table)

        # P2C weighs each replica's latency by its calls in flight: at one call
        # at a time it favours the quicker replica; under load it spreads.
        tally: collections.Counter[str] = collections.Counter()

        async def caller(number: int) -> None:
            for index in range(25):
                reply = await client.call("greeter.hello", name=f"caller {number}.{index}")
                tally[reply["replica"]] += 1

        async with asyncio.TaskGroup() as group:
            for number in range(8):
                group.create_task(caller(number))
        console.print("200 calls to greeter.hello, 8 at a time:", dict(tally))

        try:
            await client.call("greeter.hello", name=42)
        except Exception as exc:
            console.print(f"a bad argument is refused: [yellow]{type(exc).__name__}[/]: {exc}")


def main() -> int:
    env = dict(os.environ, FLOTILLA_DATA_DIR=str(HERE / ".flotilla"))
    settings = Settings.from_env(env)
    console.rule("flotilla run examples/hello")
    system = subprocess.Popen(
        [sys.executable, "-m", "flotilla", "run", str(HERE), "--no-status"], env=env
    )
    try:
        run_loop(exercise(settings))
        console.rule('flotilla call front.greet \'{"names": ["Linus"]}\'')
        subprocess.run(
            [sys.executable, "-m", "flotilla", "call", "front.greet", '{"names": ["Linus"]}'],
            env=env,
            check=True,
        )
        console.rule("flotilla ps")
        subprocess.run([sys.executable, "-m", "flotilla", "ps"], env=env, check=True)
    finally:
        console.rule("stopping (SIGINT, graceful drain)")
        system.send_signal(signal.SIGINT)
        try:
            system.wait(timeout=30)
        except subprocess.TimeoutExpired:
            system.kill()
            system.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

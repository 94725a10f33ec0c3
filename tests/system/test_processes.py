"""The issue's acceptance, across real processes on the embedded registry.

Two replicas of the hello greeter run as `flotilla serve` processes; this test
process is the third, a caller on the same SQLite registry.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from flotilla import Attempt, Node, NodeConfig, Unavailable
from flotilla.pipeline import Handler
from flotilla.registry import open_registry
from flotilla.runtime.settings import Settings

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


class AttemptLog:
    """A metrics-slot middleware that records where every attempt went, and when."""

    def __init__(self) -> None:
        self.attempts: list[tuple[float, str]] = []

    async def __call__(self, attempt: Attempt, call_next: Handler[Attempt]) -> msgspec.Raw:
        self.attempts.append((time.monotonic(), attempt.endpoint.address))
        response: msgspec.Raw = await call_next(attempt)
        return response


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"FLOTILLA_DATA_DIR": str(tmp_path / "data")})


@pytest.fixture
def replicas(settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = []
    for number in (1, 2):
        env = dict(
            os.environ,
            FLOTILLA_DATA_DIR=str(settings.data_dir),
            FLOTILLA_REPLICA=str(number),
            PYTHONPATH=str(HELLO),
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "flotilla", "serve", "greeter:Greeter"],
                env=env,
            )
        )
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


async def wait_registered(settings: Settings, count: int) -> dict[int, str]:
    """Wait for ``count`` live greeters; their addresses by pid (each publishes its pid)."""
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(60):  # a failing wait's bound; starting is slow when busy
            while len(live := await registry.list("greeter")) != count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return {int(instance.metadata["pid"]): instance.address for instance in live}
    finally:
        await registry.aclose()


async def call_many(node: Node, count: int, concurrency: int = 8) -> collections.Counter[str]:
    """``count`` calls, ``concurrency`` at a time; how many each replica answered."""
    answered: collections.Counter[str] = collections.Counter()

    async def worker(share: int) -> None:
        for index in range(share):
            reply = await node.call("greeter.hello", name=f"n{index}")
            answered[reply["replica"].split()[0]] += 1

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker(count // concurrency))
    return answered


@pytest.fixture
async def caller(settings: Settings) -> AsyncIterator[tuple[Node, AttemptLog]]:
    attempts = AttemptLog()
    config = NodeConfig(registry=settings.registry, secret=settings.secret)
    node = Node(config=config, layers={"metrics": attempts})
    async with node:
        yield node, attempts


async def test_balanced_across_replicas_and_dead_one_dropped_within_2s(
    settings: Settings,
    replicas: list[subprocess.Popen[bytes]],
    caller: tuple[Node, AttemptLog],
) -> None:
    node, attempts = caller
    address_of_pid = await wait_registered(settings, 2)
    # Round robin promises an even split whatever the load: each replica in
    # turn (a change of the endpoint set shifts the cycle by one, no more).
    config = NodeConfig(registry=settings.registry, secret=settings.secret, strategy="round_robin")
    async with Node(config=config) as turn_taker:
        evenly = await call_many(turn_taker, 400)
    assert set(evenly) == {"greeter#1", "greeter#2"}
    assert abs(evenly["greeter#1"] - evenly["greeter#2"]) <= 2, evenly
    # P2C (the default) weighs latency x calls in flight, so on a busy machine
    # it rightly favours the replica that happens to be scheduled sooner (a
    # 396/4 split is correct there); what it promises is that every replica
    # is tried, since one with no latency measured yet is the cheaper one.
    answered = await call_many(node, 400)
    assert set(answered) == {"greeter#1", "greeter#2"}, answered

    victim = replicas[0]
    victim_address = address_of_pid[victim.pid]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()

    # Keep calling through the outage.  A call written before this process has
    # read the dead socket's EOF is lost with it (Unavailable: only a retry
    # layer may resend it); once the loss is seen, a refused connection is
    # requeued to the survivor, so every later call succeeds; and from 2 s on
    # none may be sent to the dead replica.
    lost = []
    while (elapsed := time.monotonic() - killed_at) < 3.0:
        try:
            reply = await node.call("greeter.hello", name="again")
        except Unavailable:
            lost.append(elapsed)
            continue
        assert reply["replica"].startswith("greeter#2")
        await asyncio.sleep(0.005)
    assert len(lost) <= 1, lost
    assert all(at < 2.0 for at in lost), lost  # seen before calls must avoid the dead one
    late = [address for at, address in attempts.attempts if at - killed_at >= 2.0]
    assert late, "calls were made after the 2 s mark"
    assert victim_address not in late
    live = await wait_registered(settings, 1)
    assert victim_address not in live.values()


async def test_bad_frames_are_refused_and_the_service_keeps_serving(
    settings: Settings,
    replicas: list[subprocess.Popen[bytes]],
    caller: tuple[Node, AttemptLog],
) -> None:
    node, _ = caller
    addresses = (await wait_registered(settings, 2)).values()
    for address in addresses:
        host, _, port = address.rpartition(":")
        for garbage in (
            b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1",  # a frame of invalid msgpack
            b"\xff\xff\xff\xff",  # a length far past the limit
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # somebody else's protocol
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(garbage)
            await writer.drain()
            # The server closes the connection: reading ends (after its challenge frame).
            async with asyncio.timeout(5):
                while await reader.read(4096):
                    pass
            writer.close()
            await writer.wait_closed()
    answered = await call_many(node, 200)
    assert set(answered) == {"greeter#1", "greeter#2"}
    assert all(process.poll() is None for process in replicas)

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
from typing import Any

import pytest

from flotilla import Node
from flotilla.calls.pipeline import Handler
from flotilla.calls.request import Request
from flotilla.registry import open_registry
from flotilla.runtime.settings import Settings

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


class AttemptLog:
    """A metrics-slot middleware that records where every attempt went, and when."""

    def __init__(self) -> None:
        self.attempts: list[tuple[float, str]] = []

    async def __call__(self, request: Request, call_next: Handler[Request]) -> Any:
        assert request.endpoint is not None
        self.attempts.append((time.monotonic(), request.endpoint.address))
        return await call_next(request)


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
                stderr=subprocess.DEVNULL,
            )
        )
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()


async def wait_registered(settings: Settings, count: int) -> list[str]:
    registry = open_registry(settings.registry)
    try:
        async with asyncio.timeout(20):
            while len(live := await registry.list("greeter")) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return [instance.address for instance in live]
    finally:
        await registry.aclose()


@pytest.fixture
async def caller(settings: Settings) -> AsyncIterator[tuple[Node, AttemptLog]]:
    attempts = AttemptLog()
    node = Node(
        registry=settings.registry, secret=settings.secret, caller_layers={"metrics": attempts}
    )
    async with node:
        yield node, attempts


async def test_balanced_across_replicas_and_dead_one_dropped_within_2s(
    settings: Settings,
    replicas: list[subprocess.Popen[bytes]],
    caller: tuple[Node, AttemptLog],
) -> None:
    node, attempts = caller
    addresses = await wait_registered(settings, 2)
    answered = collections.Counter()
    address_of_pid = {}
    for index in range(100):
        reply = await node.call("greeter.hello", name=f"n{index}")
        answered[reply["replica"].split()[0]] += 1
        address_of_pid[_pid(reply)] = attempts.attempts[-1][1]
    assert set(answered) == {"greeter#1", "greeter#2"}
    assert min(answered.values()) >= 20, answered
    assert sorted(address_of_pid.values()) == sorted(addresses)

    victim = replicas[0]
    victim_address = address_of_pid[victim.pid]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()

    # Keep calling through the outage: every call must succeed (a refused
    # connection is requeued to the survivor), and from 2 s on none may be sent
    # to the dead replica.
    while time.monotonic() - killed_at < 3.0:
        reply = await node.call("greeter.hello", name="again")
        assert reply["replica"].startswith("greeter#2")
        await asyncio.sleep(0.005)
    late = [address for at, address in attempts.attempts if at - killed_at >= 2.0]
    assert late, "calls were made after the 2 s mark"
    assert victim_address not in late
    live = await wait_registered(settings, 1)
    assert victim_address not in live


async def test_bad_frames_are_refused_and_the_service_keeps_serving(
    settings: Settings,
    replicas: list[subprocess.Popen[bytes]],
    caller: tuple[Node, AttemptLog],
) -> None:
    node, _ = caller
    addresses = await wait_registered(settings, 2)
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
    answered = collections.Counter()
    for index in range(60):
        reply = await node.call("greeter.hello", name=f"n{index}")
        answered[reply["replica"].split()[0]] += 1
    assert set(answered) == {"greeter#1", "greeter#2"}
    assert all(process.poll() is None for process in replicas)


def _pid(reply: dict[str, str]) -> int:
    """The pid in a greeting's ``replica`` field, ``"greeter#1 (pid 1234)"``."""
    return int(reply["replica"].rpartition("pid ")[2].rstrip(")"))

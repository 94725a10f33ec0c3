"""The shop in a process of its own: `flotilla run examples/shop`, ready, then stopped.

``make demo`` and ``make load`` both run the shop the way a user would; this
is the part they share: pick the gateway's port, start the system with its
output in a log file, wait until the gateway says it is ready, and stop it
with SIGINT (a graceful drain).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

__all__ = ["DEFAULT_PORT", "SHOP_DIR", "gateway_port", "is_ready", "start", "stop", "wait_ready"]

SHOP_DIR = Path(__file__).resolve().parents[1]
"""examples/shop: what `flotilla run` is given."""
DEFAULT_PORT = 8080
START_SECONDS = 90.0  # six processes importing on a busy CI box


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


def start(data: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`flotilla run examples/shop` with its data in ``data``, its output appended to ``log``.

    It runs in a session of its own, so a Ctrl-C reaches the caller only, which then
    stops the shop once (:func:`stop`).
    """
    command = [sys.executable, "-m", "flotilla", "run", str(SHOP_DIR), "--no-status"]
    with log.open("ab") as output:
        return subprocess.Popen(
            [*command, "--data-dir", str(data)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def is_ready(http: httpx.AsyncClient) -> bool:
    """Whether the gateway behind ``http`` answers ``/readyz`` with 200."""
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False  # nobody listening (yet)


async def wait_ready(http: httpx.AsyncClient, system: subprocess.Popen[bytes]) -> None:
    """Until the gateway is ready; ``RuntimeError`` at once if the system exited."""
    async with asyncio.timeout(START_SECONDS):
        while system.poll() is None:
            if await is_ready(http):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"flotilla run exited with status {system.returncode}")


def stop(system: subprocess.Popen[bytes]) -> int:
    """SIGINT (a graceful drain), then its exit status; killed if it hangs."""
    if system.poll() is None:
        system.send_signal(signal.SIGINT)
    try:
        return system.wait(timeout=30)
    except subprocess.TimeoutExpired:
        system.kill()
        return system.wait()

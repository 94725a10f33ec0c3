"""`python -m shop.load` against a running shop: every request answered, the invariants hold."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from shop.load import MIX, parse, run_load

from flotilla.runtime.settings import Settings

SHOP = Path(__file__).resolve().parents[3] / "examples" / "shop"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path / "data"
    env = dict(os.environ, FLOTILLA_DATA_DIR=str(data), FLOTILLA_GATEWAY_PORT=str(port))
    env.pop("SHOP_JWT_SECRET", None)
    settings = Settings.from_env(env)  # makes the secret first: the system reads the same one
    process = subprocess.Popen(
        [sys.executable, "-m", "flotilla", "run", str(SHOP), "--no-status", "--data-dir", data],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield settings, f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_until_ready(url: str) -> None:
    """Until the gateway's ``/readyz`` answers 200 (503, or nothing, while the shop starts)."""
    async with httpx.AsyncClient(base_url=url) as http, asyncio.timeout(90):
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await asyncio.sleep(0.1)


async def test_a_short_load_is_measured_and_the_invariants_hold(
    shop: tuple[Settings, str],
) -> None:
    settings, url = shop
    await wait_until_ready(url)
    options = parse(
        [
            "--url",
            url,
            "--rate",
            "40",
            "--seconds",
            "2",
            "--users",
            "2",
            "--products",
            "3",
            "--seed",
            "7",
        ]
    )
    result = await run_load(options, settings, Console(quiet=True))
    assert result.recorder.done == 80  # open loop: every scheduled request was sent
    assert result.recorder.failed == 0
    assert set(result.recorder.latencies) <= set(MIX)
    assert result.violations == []


def test_bad_options_are_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--rate", "0"])
    assert "--rate and --seconds must be positive" in capsys.readouterr().err

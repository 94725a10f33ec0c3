"""`python -m shop.load` against a running shop: every request answered, the invariants hold;
`make load` starts a shop of its own when none answers."""

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

ROOT = Path(__file__).resolve().parents[3]
SHOP = ROOT / "examples" / "shop"


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
            "--scarce",
            "1",
            "--seed",
            "7",
        ]
    )
    result = await run_load(options, settings, Console(quiet=True))
    assert result.recorder.done == 80  # open loop: every scheduled request was sent
    assert result.recorder.failed == 0
    assert set(result.recorder.latencies) <= set(MIX)
    assert len(result.recorder.lags) == 80
    assert result.violations == []
    placed = len(result.recorder.latencies["order"])
    assert sum(result.states.values()) == placed > 0  # each order counted once, settled
    finals = {"confirmed", "shipped", "delivered"} | {
        f"cancelled {reason}" for reason in ("out_of_stock", "payment_declined", "user_cancelled")
    }
    assert set(result.states) <= finals


def test_make_load_starts_a_shop_when_none_answers(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody answers there: make load starts its own
    env = dict(os.environ, COLUMNS="200")
    env.pop("FLOTILLA_DATA_DIR", None)
    env.pop("MAKEFLAGS", None)
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(ROOT),
            "load",
            "RATE=20",
            "SECONDS=2",
            f"LOAD_URL=http://127.0.0.1:{port}",
            "LOAD_ARGS=--users 2 --products 2 --scarce 1",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert f"no shop at http://127.0.0.1:{port}: starting one" in out
    assert "40 requests in" in out
    assert "generator lag past schedule" in out
    assert "orders placed, by final state" in out
    assert "invariants hold" in out
    assert "stopping the shop: exit status 0" in out


def test_bad_options_are_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--rate", "0"])
    assert "--rate and --seconds must be positive" in capsys.readouterr().err

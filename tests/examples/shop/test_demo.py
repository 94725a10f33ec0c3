"""`make demo` (examples/shop/demo.py) runs its journey, checks the invariants and exits.

DEMO_EXIT=1 makes it stop after the summary instead of holding the shop open.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[3] / "examples" / "shop" / "demo.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_demo_walks_the_journey_and_the_invariants_hold(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        DEMO_EXIT="1",
        FLOTILLA_DATA_DIR=str(tmp_path / "data"),
        FLOTILLA_GATEWAY_PORT=str(free_port()),
        COLUMNS="200",  # rich wraps nothing, so the lines read whole
    )
    env.pop("SHOP_JWT_SECRET", None)
    done = subprocess.run(
        [sys.executable, str(DEMO)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "invariants hold" in done.stdout
    assert "payment_declined" in done.stdout
    assert "out_of_stock" in done.stdout
    assert "user_cancelled" in done.stdout

"""`make demo` (examples/shop/demo.py) runs its journey, checks the invariants and exits.

DEMO_EXIT=1 makes it stop after the summary instead of holding the shop open.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.examples.shop.test_run_cluster import Cluster, cluster  # noqa: F401 - a fixture

DEMO = Path(__file__).resolve().parents[3] / "examples" / "shop" / "demo.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_demo(tmp_path: Path, timeout: float, **variables: str) -> subprocess.CompletedProcess[str]:
    """``examples/shop/demo.py`` to its end (no TTY, ``DEMO_EXIT``), on a free gateway port."""
    env = dict(
        os.environ,
        DEMO_EXIT="1",
        FLOTILLA_DATA_DIR=str(tmp_path / "data"),
        FLOTILLA_GATEWAY_PORT=str(free_port()),
        COLUMNS="200",  # rich wraps nothing, so the lines read whole
        **variables,
    )
    env.pop("SHOP_JWT_SECRET", None)
    done = subprocess.run(
        [sys.executable, str(DEMO)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_demo_walks_the_journey_and_the_invariants_hold(tmp_path: Path) -> None:
    done = run_demo(tmp_path, timeout=120)
    assert "invariants hold" in done.stdout
    assert "payment_declined" in done.stdout
    assert "out_of_stock" in done.stdout
    assert "user_cancelled" in done.stdout
    # The narration shows the services at work: the events each published, read off the
    # system's event log, and what each service says it did.
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    for published in (
        "orders order.created",
        "inventory stock.reserved",
        "payments payment.captured",
        "orders order.confirmed",
        "payments payment.declined",
        "inventory stock.rejected",
        "orders order.cancelled",
        "payments payment.refunded",
    ):
        assert any(line.endswith(published) for line in lines), published
    assert "payments: captured $50.00" in done.stdout
    assert "payments: refunded $50.00" in done.stdout
    assert "notifications: Ada was told order_cancelled, order_confirmed" in done.stdout


def test_the_demo_runs_twice_on_nats_and_postgresql(
    tmp_path: Path,
    cluster: Cluster,  # noqa: F811 - the fixture
) -> None:
    for _ in range(2):  # the second finds the first's data on the servers
        done = run_demo(
            tmp_path,
            timeout=180,
            FLOTILLA_REGISTRY=cluster.registry,
            FLOTILLA_EVENTS=cluster.events,
            FLOTILLA_DATABASE_URL=cluster.database,
        )
        assert f"registry {cluster.registry}" in done.stdout
        assert "invariants hold" in done.stdout
    # Orders 4 to 6: the first run's three are still there.
    assert "│ 4 " in done.stdout, done.stdout

"""``flotilla run`` with a ``[gateway]``: the gateway is a supervised process serving HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # fixtures' types; tests/cli/conftest.py provides the fixtures
    from conftest import Flotilla, System

ROUTES = """
from flotilla.gateway import Route

ROUTES = [Route("POST", "/hello", "echo.hello"), Route("GET", "/ping", "echo.ping")]
"""
GATEWAY = """
[gateway]
routes = "echo_routes:ROUTES"
port = 1
jwt_secret_env = "TEST_JWT_SECRET"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(system: System, url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        assert system.process.poll() is None, system.output()
        try:
            response = httpx.get(f"{url}/readyz", timeout=1)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, system.output()
        time.sleep(0.1)


def gateway_pids(output: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"started gateway\.1 \(pid (\d+)\)", output)]


def test_run_starts_the_gateway_and_restarts_it_when_it_dies(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    system_dir = flotilla.write_system(tmp_path, replicas=1)
    (system_dir / "echo_routes.py").write_text(ROUTES)
    with (system_dir / "flotilla.toml").open("a") as file:
        file.write(GATEWAY)
    port = free_port()
    running = flotilla.start(system_dir, "--port", str(port), "--for", "120")
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_ready(running, url).json() == {"status": "ready", "instances": {"echo": 1}}
        hello = httpx.post(f"{url}/hello", json={"name": "Ada"}, timeout=5)
        assert hello.status_code == 200
        assert hello.json()["text"] == "Hello, Ada"
        # The signing key was generated in the data directory, for the next start too.
        assert (running.data_dir / "jwt.key").stat().st_mode & 0o777 == 0o600

        [first] = gateway_pids(running.output())
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(gateway_pids(running.output())) < 2:
            assert time.monotonic() < deadline, running.output()
            time.sleep(0.1)
        wait_ready(running, url)
        assert httpx.get(f"{url}/ping", timeout=5).json() == "pong"
    finally:
        assert running.stop() == 0
    assert "gateway.1 | " in running.output()


def test_a_bad_routes_module_is_a_configuration_error(flotilla: Flotilla, tmp_path: Path) -> None:
    done = flotilla("gateway", "--routes", "nowhere_module:ROUTES", cwd=tmp_path)
    assert done.returncode == 2
    assert "cannot import 'nowhere_module'" in done.stderr


def write_gateway_system(flotilla: Flotilla, directory: Path, routes: str) -> Path:
    flotilla.write_system(directory, replicas=1)
    (directory / "echo_routes.py").write_text(routes)
    with (directory / "flotilla.toml").open("a") as file:
        file.write(GATEWAY)
    return directory / "flotilla.toml"


def test_check_binds_the_routes_to_the_classes_before_anything_starts(
    flotilla: Flotilla, tmp_path: Path
) -> None:
    write_gateway_system(flotilla, tmp_path, ROUTES)
    assert flotilla("check", str(tmp_path)).returncode == 0
    bad = ROUTES.replace('"/ping", "echo.ping"', '"/ping/{id}", "echo.pong"')
    path = write_gateway_system(
        flotilla, tmp_path, bad + 'ROUTES.append(Route("GET", "/x", "nobody.x"))\n'
    )
    line = path.read_text().splitlines().index('routes = "echo_routes:ROUTES"') + 1
    done = flotilla("check", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == (
        f"error: {path}:{line}: gateway.routes: route GET /ping/{{id}} -> echo.pong: 'echo' has "
        "no method 'pong' (its methods: hello, ping, slow); route GET /x -> nobody.x: the system "
        "runs no service 'nobody' (its services: echo)\n"
    )
    started = flotilla("run", "--no-status", "--for", "30", str(tmp_path))
    assert started.returncode == 2
    assert "started" not in started.stderr

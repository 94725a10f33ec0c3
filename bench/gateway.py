"""Gateway overhead: a GET through the HTTP gateway against the same RPC called directly.

    .venv/bin/python bench/gateway.py              # 2000 calls each way, after 300 of warm-up
    .venv/bin/python bench/gateway.py --calls 500  # a quick look

Three processes on loopback, uvloop in each: a service (``flotilla serve``), a
gateway (``flotilla gateway``) routing ``GET /ping`` to it, and this driver.
The driver times, one call at a time (concurrency 1), alternating blocks of
100 so that drift on a shared machine hits both alike:

* direct: ``await node.call("bench.ping")`` from a pure-client node;
* gateway: ``GET /ping`` over one kept-alive HTTP/1.1 connection, with a
  minimal client (write the request, read the head and Content-Length bytes),
  so that the figure is the gateway's cost and not an HTTP client's.

Both answer the same JSON-able value.  A third row, ``GET /healthz`` on the
same connection, is the HTTP side alone (uvicorn, Starlette, the request-id
and metrics layer; no call behind it).  Prints p50/p99 of each and the ratio
of the p50s (target: gateway <= 1.3x direct).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from flotilla.runtime.node import Node, NodeConfig

SERVICE = """
from flotilla import Service, rpc


class Bench(Service, name="bench"):
    @rpc(idempotent=True)
    async def ping(self) -> dict[str, int]:
        return {"n": 1}
"""
ROUTES = """
from flotilla.gateway import Route

ROUTES = [Route("GET", "/ping", "bench.ping")]
"""
TARGET = 1.3
BLOCK = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HttpConnection:
    """One kept-alive HTTP/1.1 connection that GETs a path and reads the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def get(self, path: str) -> bytes:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        if status != b"200":
            raise RuntimeError(f"GET {path}: {head!r}")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return await self.reader.readexactly(length)


async def timed(call: object, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        await call()  # type: ignore[operator]
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(registry: str, secret: bytes, port: int, calls: int, warmup: int) -> None:
    async with Node(config=NodeConfig(registry=registry, secret=secret)) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        http = HttpConnection(reader, writer)

        async def direct() -> None:
            await node.call("bench.ping")

        async def through_gateway() -> None:
            await http.get("/ping")

        async def gateway_alone() -> None:  # the HTTP layers with no call behind them
            await http.get("/healthz")

        for call in (direct, through_gateway, gateway_alone):
            await timed(call, warmup)
        direct_us: list[float] = []
        gateway_us: list[float] = []
        http_us: list[float] = []
        for _ in range(max(1, calls // BLOCK)):
            direct_us += await timed(direct, BLOCK)
            gateway_us += await timed(through_gateway, BLOCK)
            http_us += await timed(gateway_alone, BLOCK)
        writer.close()
    report(direct_us, gateway_us, http_us)


def report(direct_us: list[float], gateway_us: list[float], http_us: list[float]) -> None:
    rows = [
        ("direct RPC (Node)", direct_us),
        ("GET via gateway", gateway_us),
        ("GET /healthz", http_us),
    ]
    print(f"{'path':<20} {'calls':>6} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}")
    for name, samples in rows:
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        print(
            f"{name:<20} {len(samples):>6} {p50:>8.0f} {p99:>8.0f} {statistics.mean(samples):>8.0f}"
        )
    ratio = percentile(gateway_us, 0.5) / percentile(direct_us, 0.5)
    verdict = "meets" if ratio <= TARGET else "misses"
    print(f"p50 ratio gateway/direct: {ratio:.2f} ({verdict} the target <= {TARGET})")


def start(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=output)


async def wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        if answer.startswith(b"HTTP/1.1 200"):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the gateway did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-gw-") as temp:
        root = Path(temp)
        (root / "bench_service.py").write_text(SERVICE)
        (root / "bench_routes.py").write_text(ROUTES)
        secret = secrets.token_hex(32).encode()
        registry = f"sqlite://{root / 'registry.db'}"
        port = free_port()
        env = {
            **os.environ,
            "FLOTILLA_DATA_DIR": str(root),
            "FLOTILLA_REGISTRY": registry,
            "FLOTILLA_SECRET": secret.decode(),
            "FLOTILLA_GATEWAY_PORT": str(port),
            "FLOTILLA_JWT_SECRET": secrets.token_hex(32),
            "PYTHONPATH": str(root),
            # The limiter runs (its cost is part of the gateway's) but never refuses.
            "FLOTILLA_GATEWAY": json.dumps(
                {"routes": "bench_routes:ROUTES", "rate": 1e9, "burst": 1_000_000_000}
            ),
        }
        flotilla = [sys.executable, "-m", "flotilla"]
        service = start([*flotilla, "serve", "bench_service:Bench"], env, root, root / "svc.log")
        gateway = start(
            [*flotilla, "gateway", "--log-level", "WARNING"], env, root, root / "gw.log"
        )
        try:
            uvloop.run(wait_ready(port))
            uvloop.run(measure(registry, secret, port, options.calls, options.warmup))
        finally:
            for process in (gateway, service):
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()

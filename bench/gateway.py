"""Gateway overhead: a GET through the HTTP gateway against the same RPC called directly.

    .venv/bin/python bench/gateway.py                  # 2000 calls each way, after 300 of warm-up
    .venv/bin/python bench/gateway.py --calls 500      # a quick look
    .venv/bin/python bench/gateway.py --baseline main  # and main's gateway beside this one
    .venv/bin/python bench/gateway.py --profile DIR    # py-spy the gateway, µs per function
    .venv/bin/python bench/gateway.py --in-process --baseline main  # the gateway's own work

Three processes on loopback, uvloop in each: a service (``flotilla serve``), a
gateway (``flotilla gateway``) routing ``GET /ping`` to it, and this driver.
The driver times, one call at a time (concurrency 1), alternating blocks of
100 so that drift on a shared machine hits both alike:

* direct: ``await node.call("bench.ping")`` from a pure-client node;
* gateway: ``GET /ping`` over one kept-alive HTTP/1.1 connection, with a
  minimal client (write the request, read the head and Content-Length bytes),
  so that the figure is the gateway's cost and not an HTTP client's.

Both answer the same JSON-able value.  A third row, ``GET /healthz`` on the
same connection, is the HTTP side alone (uvicorn, the request-id and metrics
layer; no call behind it).  Prints p50/p99 of each and the ratio of the p50s
(target: gateway <= 1.3x direct), and the gateway process's CPU time per
request (from its threads' ``/proc/<pid>/task/*/schedstat``, in ns), which
means something on a busy machine where wall-clock latency hardly does.

``--baseline REF`` starts a second gateway from the source of git commit REF
(``git archive``, on ``PYTHONPATH``) beside this tree's, and times it in the
same alternating blocks: before and after in one run, under the same load.
``--profile DIR`` records the gateway with py-spy during an extra run of
gateway calls and prints its functions in µs of CPU per request.

``--in-process`` times the gateway's own work alone: its ASGI app called in
this process with the scope uvicorn would give it, an invoker that answers
at once (no network, no server, no RPC), CPU time per request.  Two routes:
``GET /ping`` (the one route above) and ``GET /api/products/{id}`` among the
shop's routes (``examples/shop``).  With ``--baseline REF`` the same is run
with commit REF's source in a subprocess, and both printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _pyspy
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
ROOT = Path(__file__).resolve().parents[1]


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


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        await call()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_ns(pid: int) -> int:
    """CPU time the process's threads have run, in ns (the scheduler's own count)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread ended
            total += int((task / "schedstat").read_text().split()[0])
    return total


def user_ticks(pid: int) -> int:
    """The process's CPU time in user mode, in clock ticks (``utime`` of ``/proc/<pid>/stat``).

    Ticks are coarse (10 ms) but counted by sampling, so their sum over many
    blocks is a fair estimate; the rest of the CPU time is the kernel's.
    """
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11])


TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One timed path: its latencies, and the CPU of the process that serves it (``pid``)."""

    name: str
    call: Callable[[], Awaitable[object]]
    pid: int | None = None
    samples: list[float] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of its blocks."""
    cpu: dict[int, int] = field(default_factory=dict)
    """ns of CPU each watched process used during its blocks."""
    user: int = 0
    """ns of CPU in user mode of ``pid`` during its blocks."""


class Meter:
    """Times rows in blocks and counts the CPU of ``pids`` (the gateways) during each.

    A gateway uses some CPU when no request comes (its node watches the
    registry, timers fire): on a slow call (several ms) that idle rate,
    counted per request, would swamp the request's own cost.  It is measured
    during the blocks of the rows that process does not serve and taken off:
    :meth:`per_request` is the CPU a request adds.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    async def block(self, row: Row, count: int) -> None:
        before = {pid: cpu_ns(pid) for pid in self.pids}
        user_before = user_ticks(row.pid) if row.pid else 0
        started = time.perf_counter()
        row.samples += await timed(row.call, count)
        row.seconds += time.perf_counter() - started
        for pid in self.pids:
            row.cpu[pid] = row.cpu.get(pid, 0) + cpu_ns(pid) - before[pid]
        if row.pid:
            row.user += (user_ticks(row.pid) - user_before) * TICK_NS

    @staticmethod
    def per_request(row: Row, rows: list[Row]) -> tuple[float, float]:
        """µs of ``row.pid``'s CPU per request of ``row``: all of it, and less its idle rate."""
        pid = row.pid
        assert pid is not None
        idle = [other for other in rows if other.pid != pid]
        idle_seconds = sum(other.seconds for other in idle)
        rate = sum(other.cpu.get(pid, 0) for other in idle) / idle_seconds if idle_seconds else 0
        used = row.cpu.get(pid, 0)
        count = 1000 * len(row.samples)
        return used / count, (used - rate * row.seconds) / count


async def connect(port: int) -> tuple[HttpConnection, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return HttpConnection(reader, writer), writer


async def measure(
    registry: str, secret: bytes, gateways: list[tuple[str, int, int]], options: argparse.Namespace
) -> None:
    """``gateways``: (label, port, pid) of each gateway process to time."""
    async with Node(config=NodeConfig(registry=registry, secret=secret)) as node:
        rows = [Row("direct RPC (Node)", lambda: node.call("bench.ping"))]
        writers = []
        for label, port, pid in gateways:
            http, writer = await connect(port)
            writers.append(writer)
            rows.append(Row(f"GET via gateway{label}", lambda h=http: h.get("/ping"), pid))
            # The HTTP layers with no call behind them.
            rows.append(Row(f"GET /healthz{label}", lambda h=http: h.get("/healthz"), pid))
        for row in rows:
            await timed(row.call, options.warmup)
        meter = Meter([pid for _, _, pid in gateways])
        for _ in range(max(1, options.calls // BLOCK)):
            for row in rows:
                await meter.block(row, BLOCK)
        if options.profile:
            await profile(rows[1], gateways[0][2], options.profile)
        for writer in writers:
            writer.close()
    report(rows)


async def profile(row: Row, pid: int, out: Path) -> None:
    """py-spy on the gateway while ``row`` runs alone; its functions in µs of CPU a request."""
    stacks = out / "gateway.txt"
    seconds = 10.0
    recorder = _pyspy.attach(_pyspy.install(), pid, stacks, seconds)
    await asyncio.sleep(1.0)  # py-spy attaches
    count, before, deadline = 0, cpu_ns(pid), time.monotonic() + seconds - 2
    while time.monotonic() < deadline:
        await timed(row.call, BLOCK)
        count += BLOCK
    used = cpu_ns(pid) - before
    await asyncio.to_thread(recorder.wait)
    print(_pyspy.summary(stacks, used / count / 1000, top=30))


def report(rows: list[Row]) -> None:
    header = f"{'path':<28} {'calls':>6} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}"
    print(f"{header} {'gateway CPU us/req':>19} {'less idle':>9} {'(user)':>7}")
    for row in rows:
        p50, p99 = percentile(row.samples, 0.5), percentile(row.samples, 0.99)
        cpu = ""
        if row.pid:
            used, net = Meter.per_request(row, rows)
            cpu = f"{used:19.0f} {net:9.0f} {row.user / 1000 / len(row.samples):7.0f}"
        mean = statistics.mean(row.samples)
        print(f"{row.name:<28} {len(row.samples):>6} {p50:>8.0f} {p99:>8.0f} {mean:>8.0f} {cpu}")
    direct = percentile(rows[0].samples, 0.5)
    for row in rows[1::2]:
        ratio = percentile(row.samples, 0.5) / direct
        verdict = "meets" if ratio <= TARGET else "misses"
        print(f"p50 ratio {row.name}/direct: {ratio:.2f} ({verdict} the target <= {TARGET})")
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"commit {commit()}; {os.cpu_count()} CPUs; load average {load}")


def commit(ref: str = "HEAD") -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", ref], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()


def export_source(ref: str, into: Path) -> Path:
    """The ``src`` tree of commit ``ref``, unpacked under ``into``; its path."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref, "src"], capture_output=True, check=True, cwd=ROOT
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


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


class _Answers:
    """The directory and invoker of a gateway whose calls are answered at once."""

    def __init__(self, tables: dict[str, tuple[Any, ...]], result: object) -> None:
        self.tables = tables
        self.result = result
        self.directory = self

    async def open(self, service: str, *, deadline: float | None) -> Any:
        return SimpleNamespace(methods={info.name: info for info in self.tables[service]})

    def get(self, service: str) -> Any:
        return None

    async def invoke(self, target: str, args: dict[str, Any], **options: Any) -> object:
        return self.result


async def own_work(routes: list[Any], tables: dict[str, Any], path: str, result: object) -> float:
    """CPU µs per ``GET path`` in the gateway's app with an invoker that answers at once."""
    from flotilla.clock import SystemClock
    from flotilla.gateway import Gateway, GatewayConfig, RateLimit, TokenSettings

    answers = _Answers(tables, result)
    node = SimpleNamespace(caller=answers, clock=SystemClock(), state="running")
    config = GatewayConfig(
        rate_limit=RateLimit(rate=1e9, burst=1_000_000_000),
        tokens=TokenSettings(secret=secrets.token_hex(32)),
    )
    gateway = Gateway(node, routes, config)  # type: ignore[arg-type]
    await gateway.start()
    scope_base = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"bench")],
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run(count: int) -> None:
        for _ in range(count):
            await gateway.app(dict(scope_base), receive, send)

    await run(2000)
    count = 20_000
    started = time.process_time_ns()
    await run(count)
    used = time.process_time_ns() - started
    await gateway.aclose()
    if set(statuses) != {200}:
        raise RuntimeError(f"GET {path}: statuses {sorted(set(statuses))}")
    return used / count / 1000


def in_process() -> None:
    """Print the gateway's own CPU µs per request on the two routes (see the docstring)."""
    sys.path.insert(0, str(ROOT / "examples" / "shop"))
    import importlib

    from flotilla.gateway import Route
    from flotilla.service import Service

    ping = {
        "bench": (
            SimpleNamespace(
                name="ping",
                timeout=None,
                idempotent=True,
                params={"type": "object", "properties": {}},
                result={},
            ),
        )
    }
    shop_routes = importlib.import_module("shop.routes").ROUTES
    tables = {}
    for module in ("users", "catalog", "inventory", "orders", "payments", "notifications"):
        for value in vars(importlib.import_module(f"shop.{module}")).values():
            if isinstance(value, type) and issubclass(value, Service) and value is not Service:
                tables[value.name] = value.method_table()
    product = {"id": 7, "name": "kettle", "price_cents": 2500, "category": "tea"}
    cases = [
        ("GET /ping (1 route)", [Route("GET", "/ping", "bench.ping")], ping, "/ping", {"n": 1}),
        ("GET /api/products/{id} (shop)", shop_routes, tables, "/api/products/7", product),
    ]
    for name, routes, table, path, result in cases:
        print(f"{name:<32} {uvloop.run(own_work(routes, table, path, result)):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--baseline", metavar="REF", help="also time the gateway of commit REF")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="py-spy the gateway")
    parser.add_argument("--in-process", action="store_true", help="the gateway's own work")
    options = parser.parse_args()
    if options.in_process:
        print(f"{'gateway app, in process':<32} {'CPU us/req':>8}")
        if options.baseline:
            with tempfile.TemporaryDirectory(prefix="flotilla-bench-gw-") as temp:
                source = export_source(options.baseline, Path(temp) / "baseline")
                print(f"-- @{commit(options.baseline)}", flush=True)
                env = {**os.environ, "PYTHONPATH": str(source)}
                command = [sys.executable, __file__, "--in-process"]
                output = subprocess.run(
                    command, env=env, check=True, capture_output=True, text=True
                )
                print("\n".join(output.stdout.splitlines()[2:]))  # its rows
        print(f"-- @{commit()} (this tree)", flush=True)
        in_process()
        return
    if options.profile:
        options.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flotilla-bench-gw-") as temp:
        root = Path(temp)
        (root / "bench_service.py").write_text(SERVICE)
        (root / "bench_routes.py").write_text(ROUTES)
        secret = secrets.token_hex(32).encode()
        registry = f"sqlite://{root / 'registry.db'}"
        env = {
            **os.environ,
            "FLOTILLA_DATA_DIR": str(root),
            "FLOTILLA_REGISTRY": registry,
            "FLOTILLA_SECRET": secret.decode(),
            "FLOTILLA_JWT_SECRET": secrets.token_hex(32),
            "PYTHONPATH": str(root),
            # The limiter runs (its cost is part of the gateway's) but never refuses.
            "FLOTILLA_GATEWAY": json.dumps(
                {"routes": "bench_routes:ROUTES", "rate": 1e9, "burst": 1_000_000_000}
            ),
        }
        flotilla = [sys.executable, "-m", "flotilla"]
        gateway = [*flotilla, "gateway", "--log-level", "WARNING"]
        service = start([*flotilla, "serve", "bench_service:Bench"], env, root, root / "svc.log")
        processes = [service]
        gateways: list[tuple[str, int, int]] = []
        variants = [("", str(root))]
        if options.baseline:
            source = export_source(options.baseline, root / "baseline")
            variants.append((f" @{commit(options.baseline)}", f"{source}:{root}"))
        try:
            for label, path in variants:
                port = free_port()
                own = {**env, "FLOTILLA_GATEWAY_PORT": str(port), "PYTHONPATH": path}
                log = root / f"gw{len(gateways)}.log"
                process = start(gateway, own, root, log)
                processes.append(process)
                gateways.append((label, port, process.pid))
            for _, port, _ in gateways:
                uvloop.run(wait_ready(port))
            uvloop.run(measure(registry, secret, gateways, options))
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()

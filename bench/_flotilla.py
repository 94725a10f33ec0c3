"""The flotilla side of the bench: a tiny service and a client calling it through the full pipeline.

    python bench/_flotilla.py server --registry sqlite:///tmp/x/registry.db --secret HEX
    python bench/_flotilla.py client --registry ... --secret HEX --concurrency 64 --seconds 3
    python bench/_flotilla.py probe  --registry ... --secret HEX --calls 20

The server is ``Node(Echo(), config=NodeConfig(registry=..., secret=...))`` run by
``flotilla.runtime.serve.run_loop`` (uvloop); it prints one JSON line once it is
registered.  The client is ``Node(config=NodeConfig(registry=..., secret=...))`` (a pure client)
calling ``await node.call("echo.ping", n=1)``: discovery through the embedded
SQLite registry, then deadline -> balance -> transport on every call.

``--profile PATH`` (server and client) records a profile of the serving /
measuring period: cProfile stats (``.prof``, read with pstats) or, with
``--profiler pyinstrument``, a text report.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import _loadgen

from flotilla import Node, NodeConfig, Service, rpc
from flotilla.runtime.serve import run_loop


class Echo(Service, name="echo"):
    @rpc
    async def ping(self, n: int) -> int:
        return n


class _Profile:
    """cProfile or pyinstrument, started and stopped around the part worth seeing."""

    def __init__(self, path: str | None, kind: str) -> None:
        self.path = path
        self.kind = kind
        self._profiler: Any = None

    def start(self) -> None:
        if self.path is None:
            return
        if self.kind == "pyinstrument":
            from pyinstrument import Profiler

            self._profiler = Profiler(interval=0.0002, async_mode="disabled")
            self._profiler.start()
        else:
            import cProfile

            self._profiler = cProfile.Profile()
            self._profiler.enable()

    def stop(self) -> None:
        profiler, self._profiler = self._profiler, None
        if profiler is None or self.path is None:
            return
        if self.kind == "pyinstrument":
            profiler.stop()
            with open(self.path, "w") as out:
                out.write(profiler.output_text(unicode=True, color=False, show_all=False))
        else:
            profiler.disable()
            profiler.dump_stats(self.path)


async def _serve(registry: str, secret: bytes, profile: _Profile) -> None:
    node = Node(Echo(), config=NodeConfig(registry=registry, secret=secret))
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        profile.stop()
        node.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await node.start()
    profile.start()
    _loadgen.emit({"ready": True, "address": node.server.address, "pid": os.getpid()})
    await node.wait_stopped()
    profile.stop()


async def _client(
    registry: str,
    secret: bytes,
    concurrency: int,
    warmup: float,
    seconds: float,
    profile: _Profile,
) -> None:
    async with Node(config=NodeConfig(registry=registry, secret=secret)) as node:
        # The first call opens the registry watch and the connection.
        if await node.call("echo.ping", n=1) != 1:
            raise SystemExit("flotilla echo returned the wrong answer")

        def call() -> Any:
            return node.call("echo.ping", n=1)

        profile.start()
        try:
            result = await _loadgen.measure(
                call, concurrency=concurrency, warmup=warmup, seconds=seconds
            )
        finally:
            profile.stop()
    result["kind"] = "flotilla"
    _loadgen.emit(result)


async def _probe(registry: str, secret: bytes, calls: int) -> None:
    async with Node(config=NodeConfig(registry=registry, secret=secret)) as node:
        for _ in range(calls):
            if await node.call("echo.ping", n=1) != 1:
                raise SystemExit("flotilla echo returned the wrong answer")
    _loadgen.emit({"probe_calls": calls})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    modes = {name: sub.add_parser(name) for name in ("server", "client", "probe")}
    for mode in modes.values():
        mode.add_argument("--registry", required=True)
        mode.add_argument("--secret", required=True, help="hex")
    for name in ("server", "client"):
        modes[name].add_argument("--profile", default=None, help="write a profile to this path")
        modes[name].add_argument(
            "--profiler", choices=("cprofile", "pyinstrument"), default="cprofile"
        )
    modes["client"].add_argument("--concurrency", type=int, default=1)
    modes["client"].add_argument("--warmup", type=float, default=0.5)
    modes["client"].add_argument("--seconds", type=float, default=3.0)
    modes["probe"].add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    secret = bytes.fromhex(args.secret)
    try:
        if args.mode == "server":
            run_loop(_serve(args.registry, secret, _Profile(args.profile, args.profiler)))
        elif args.mode == "client":
            run_loop(
                _client(
                    args.registry,
                    secret,
                    args.concurrency,
                    args.warmup,
                    args.seconds,
                    _Profile(args.profile, args.profiler),
                )
            )
        else:
            run_loop(_probe(args.registry, secret, args.calls))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

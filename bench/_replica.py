"""One replica of the resilience bench: a node hosting the bench services, misbehaving on demand.

    python bench/_replica.py --registry sqlite:///tmp/x/registry.db --secret HEX --index 0 \
        [--service-time 0.002] [--workers 4] [--chain] \
        [--faults '{"error_fraction": 1.0}'] [--faults-service leaf] [--armed] \
        [--policy '{"bulkhead": {"max_concurrent": 4}}']

It hosts ``bench.work`` (idempotent; sleeps ``--service-time``, holding one of
``--workers`` slots when given: a replica's capacity is then ``workers /
service_time`` calls per second) and, with ``--chain``, ``front.work ->
middle.work -> leaf.work``, each calling the next.

Misbehaviour is a :class:`~flotilla.resilience.policy.FaultPolicy` (JSON
fields) that the node's own fault-injection layer applies to
``--faults-service``'s calls (``node.faults.set``), from the start with
``--armed``, else from the first SIGUSR1 (so a phase can begin healthy).
``--policy`` is the system level of the node's ``[resilience]`` table (its
bulkhead, and the retries of the calls ``front`` and ``middle`` make).

Protocol with the driver, one JSON line per message on stdout:

* at start: ``{"ready": true, "pid", "index", "instances": [ids]}``;
* on SIGUSR1: the faults switch on (no answer);
* on SIGUSR2: ``{"calls": {target: n}, "last_call_at": {target: t}, "armed_at": t,
  "first_call_armed_at": t, "calls_armed": n}`` (Unix seconds), the counts since the start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

import _loadgen
import msgspec

from flotilla import Context, Node, NodeConfig, Service, rpc
from flotilla.pipeline import Handler
from flotilla.resilience.config import PolicyTable
from flotilla.resilience.policy import FaultPolicy, Policy
from flotilla.runtime.dispatcher import Incoming
from flotilla.runtime.serve import run_loop


class Bench(Service, name="bench"):
    """The service most cases call: a fixed service time, optionally a bounded worker pool."""

    def __init__(self, service_time: float, workers: int) -> None:
        self.service_time = service_time
        # The pool stands for what limits a real service (threads, a database
        # pool): without it a sleeping handler would have no capacity limit.
        self.workers = asyncio.Semaphore(workers) if workers > 0 else None

    @rpc(idempotent=True)
    async def work(self, n: int) -> int:
        if self.workers is None:
            await asyncio.sleep(self.service_time)
            return n
        async with self.workers:
            await asyncio.sleep(self.service_time)
        return n


class Front(Service, name="front"):
    @rpc(idempotent=True)
    async def work(self, ctx: Context, n: int) -> int:
        result: int = await ctx.call("middle.work", n=n)
        return result


class Middle(Service, name="middle"):
    @rpc(idempotent=True)
    async def work(self, ctx: Context, n: int) -> int:
        result: int = await ctx.call("leaf.work", n=n)
        return result


class Leaf(Service, name="leaf"):
    @rpc(idempotent=True)
    async def work(self, n: int) -> int:
        return n


class Tally:
    """A server ``user`` layer: counts every call this replica receives, per target.

    It stands outside the bulkhead and the faults, so it sees the calls they refuse.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.last_call_at: dict[str, float] = {}
        self.armed_at: float | None = None
        self.first_call_armed_at: float | None = None
        self.calls_armed = 0

    def __call__(self, incoming: Incoming, call_next: Handler[Incoming]) -> Any:
        now = time.time()
        self.calls[incoming.target] += 1
        self.last_call_at[incoming.target] = now
        if self.armed_at is not None:
            self.calls_armed += 1
            if self.first_call_armed_at is None:
                self.first_call_armed_at = now
        return call_next(incoming)

    def report(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "last_call_at": self.last_call_at,
            "armed_at": self.armed_at,
            "first_call_armed_at": self.first_call_armed_at,
            "calls_armed": self.calls_armed,
        }


async def _serve(args: argparse.Namespace) -> None:
    services: list[Service] = [Bench(args.service_time, args.workers)]
    if args.chain:
        services += [Front(), Middle(), Leaf()]
    tally = Tally()
    faults = msgspec.json.decode(args.faults, type=FaultPolicy) if args.faults else None
    policy = msgspec.json.decode(args.policy, type=Policy) if args.policy else Policy()
    config = NodeConfig(
        registry=args.registry,
        secret=bytes.fromhex(args.secret),
        resilience=PolicyTable(system=policy),
    )
    node = Node(*services, config=config, server_layers={"user": tally})
    loop = asyncio.get_running_loop()

    def arm() -> None:
        if faults is not None and tally.armed_at is None:
            # The node's fault-injection layer, switched at run time.
            node.faults.set(args.faults_service, None, faults)
            tally.armed_at = time.time()

    loop.add_signal_handler(signal.SIGUSR1, arm)
    loop.add_signal_handler(signal.SIGUSR2, lambda: _loadgen.emit(tally.report()))
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, node.stop)
    if args.armed:
        arm()
    await node.start()
    instances = [instance.id for instance in node.instances]
    _loadgen.emit({"ready": True, "pid": os.getpid(), "index": args.index, "instances": instances})
    await node.wait_stopped()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--secret", required=True, help="hex")
    parser.add_argument("--index", type=int, default=0, help="this replica's number, for reports")
    parser.add_argument("--service-time", type=float, default=0.002, help="seconds per call")
    parser.add_argument("--workers", type=int, default=0, help="calls served at once (0: any)")
    parser.add_argument("--chain", action="store_true", help="also host front, middle, leaf")
    parser.add_argument("--faults", default=None, help="a FaultPolicy as JSON")
    parser.add_argument("--faults-service", default="bench", help="the service faults hit")
    parser.add_argument("--armed", action="store_true", help="faults from the start")
    parser.add_argument("--policy", default=None, help="the node's resilience Policy as JSON")
    args = parser.parse_args(argv)
    try:
        run_loop(_serve(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

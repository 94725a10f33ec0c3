"""What the server's resilience layers cost per call: CPU time of a dispatch, with and without.

    .venv/bin/python bench/server_layers.py

Dispatches an echo call straight into a ``Dispatcher`` (no sockets), so the
figure is the layers' own CPU cost, and process time (not wall time) keeps it
steady on a busy machine.  Each configuration runs 15 rounds of 50,000 calls,
interleaved; the best round of each is printed, with its excess over none.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from flotilla import Service, codec, rpc
from flotilla.headers import Headers
from flotilla.resilience.bulkhead import Bulkhead
from flotilla.resilience.faults import Faults
from flotilla.runtime.dispatcher import Dispatcher

ROUNDS = 15
CALLS = 50_000


class Echo(Service, name="echo"):
    @rpc
    async def ping(self, n: int) -> int:
        return n


async def round_of_calls(dispatcher: Dispatcher, args: msgspec.Raw, headers: Headers) -> float:
    """CPU microseconds per call over one round."""
    started = time.process_time()
    for _ in range(CALLS):
        await dispatcher("echo.ping", args, headers)
    return (time.process_time() - started) / CALLS * 1e6


async def main() -> None:
    configurations: dict[str, dict[str, Any]] = {
        "none": {},
        "faults": {"faults": Faults()},
        "bulkhead": {"bulkhead": Bulkhead()},
        "bulkhead+faults": {"bulkhead": Bulkhead(), "faults": Faults()},
    }
    no_invoker: Any = None  # echo makes no onward calls
    dispatchers = {
        name: Dispatcher([Echo()], no_invoker, layers) for name, layers in configurations.items()
    }
    args, headers = msgspec.Raw(codec.encode({"n": 1})), Headers()
    best = dict.fromkeys(dispatchers, float("inf"))
    for _ in range(ROUNDS):
        for name, dispatcher in dispatchers.items():
            best[name] = min(best[name], await round_of_calls(dispatcher, args, headers))
    for name, micros in best.items():
        print(f"{name:16s} {micros:5.2f} µs CPU per call  (+{micros - best['none']:.2f})")


if __name__ == "__main__":
    asyncio.run(main())

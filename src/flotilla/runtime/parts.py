"""The parts a node is made of, each started in order and stopped in reverse.

::

    caller -> [ops] -> events -> [data] -> services -> health -> consumers -> server -> lease
    (start left to right; stop right to left)

* ``caller``: the client side (local view of the registry, connections); first
  up so that ``on_start`` hooks may call other services, last down so that
  calls still running during the drain can finish theirs.
* ``ops``: the ops HTTP port (:mod:`flotilla.runtime.ops_http`), when configured;
  up early and down late, so probes see the node start, serve and drain.
* ``services``: the services' ``on_start`` / ``on_stop`` hooks.
* ``health``: runs the services' health checks (:mod:`flotilla.runtime.health`);
  a first round before the server listens, so registration carries results.
* ``server``: listens; on stop keeps serving for the grace period (callers'
  views drop this node meanwhile), then refuses new calls and drains.
* ``events`` and ``consumers``: the event backend and a consumer per
  ``@on_event`` handler (:mod:`flotilla.events.part` says why they stand there).
* ``data``: the services' databases and their outbox relays
  (:mod:`flotilla.data.parts`), when a service declares a database; up before
  ``on_start`` and down after ``on_stop``, so both may use them.
* ``lease``: registers the instances under a lease and keeps it; on stop
  deregisters first, so callers stop choosing the node before it stops serving.

A new kind of part implements :class:`Part`; :class:`~flotilla.runtime.node.Node`
places it (the parts of hosting services: :mod:`flotilla.runtime.hosting`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from flotilla.calls.client import Caller
from flotilla.service import Service
from flotilla.transport.server import Server

__all__ = ["CallerPart", "Part", "ServerPart", "ServicesPart"]

log = logging.getLogger("flotilla.runtime")


class Part(Protocol):
    """One piece of a node's lifecycle."""

    name: str

    async def start(self) -> None:
        """Bring the part up; on failure undo what it did, then raise."""
        ...

    async def stop(self) -> None:
        """Take the part down; log failures rather than raise (the next part must still stop)."""
        ...


class CallerPart:
    """The client side: its views open on first use; stopping closes them and the connections."""

    name = "caller"

    def __init__(self, caller: Caller) -> None:
        self.caller = caller

    async def start(self) -> None:
        pass  # views open on first use

    async def stop(self) -> None:
        await self.caller.aclose()


class ServicesPart:
    """Runs ``on_start`` of each service in order, ``on_stop`` of those started in reverse."""

    name = "services"

    def __init__(self, services: Sequence[Service]) -> None:
        self.services = services
        self._started: list[Service] = []

    async def start(self) -> None:
        for service in self.services:
            try:
                await service.on_start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(service)

    async def stop(self) -> None:
        while self._started:
            service = self._started.pop()
            try:
                await service.on_stop()
            except Exception:
                log.exception("on_stop of %s failed", service.name)


class ServerPart:
    """Listens for calls; stops by grace -> drain (bounded) -> close."""

    name = "server"

    def __init__(self, server: Server, *, grace: float, drain: float) -> None:
        self.server = server
        self.grace = grace
        self.drain = drain
        self._cut = False

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        if not self._cut:
            await asyncio.sleep(self.grace)
            await self.server.drain(self.drain)
        await self.server.aclose()

    async def cut(self) -> None:
        """Close every connection at once, as a crash would (no grace, no drain)."""
        self._cut = True
        await self.server.aclose()

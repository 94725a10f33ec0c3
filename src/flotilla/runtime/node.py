"""A node hosts services in one process: start, register, heartbeat, serve, drain.

::

    async with Node(Greeter(), registry="sqlite:///.flotilla/registry.db", secret=s) as node:
        await node.call("greeter.hello", name="Ada")
        await node.wait_stopped()

Lifecycle (``aclose`` runs the second half in reverse, once, and is idempotent)::

    start:  on_start() each service -> listen -> register (healthy) -> heartbeat loop
    stop:   deregister -> keep serving for the grace period (callers' views catch up)
            -> refuse new calls, finish in-flight ones (bounded) -> close connections
            -> on_stop() each service -> close caller and registry

A node with no services is a pure client (what ``flotilla call`` uses).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from flotilla.balancing import DEFAULT_STRATEGY, Strategy
from flotilla.calls.client import Caller
from flotilla.calls.deadline import DEFAULT_TIMEOUT
from flotilla.calls.pipeline import Middleware
from flotilla.calls.request import Request
from flotilla.calls.typed_client import TypedClient
from flotilla.clock import Clock, SystemClock
from flotilla.context import Context
from flotilla.registry import Health, Instance, Registry, open_registry
from flotilla.runtime.dispatcher import Dispatcher, Incoming
from flotilla.runtime.lease import LeaseKeeper
from flotilla.service import Service
from flotilla.transport.server import Server

__all__ = ["Node", "Timings"]

log = logging.getLogger("flotilla.runtime")

S = TypeVar("S", bound=Service)


class Timings:
    """The node's clock settings, in seconds.

    A dead instance leaves callers' views within ``ttl`` plus the registry's
    watch latency; ``heartbeat`` must be well under ``ttl`` so that one late
    beat does not expire a live instance.
    """

    __slots__ = ("drain", "grace", "health_timeout", "heartbeat", "ttl")

    def __init__(
        self,
        *,
        ttl: float = 1.5,
        heartbeat: float = 0.4,
        grace: float = 0.5,
        drain: float = 10.0,
        health_timeout: float | None = None,
    ) -> None:
        if health_timeout is None:
            health_timeout = min(1.0, (ttl - heartbeat) / 2)
        if heartbeat + health_timeout >= ttl:
            # A beat waits for the health checks: a slow one must not cost the lease.
            raise ValueError("heartbeat + health_timeout must be shorter than the lease ttl")
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.grace = grace
        self.drain = drain
        self.health_timeout = health_timeout


class Node:
    """Hosts ``services`` and calls others; use as ``async with`` or ``start()`` / ``aclose()``."""

    def __init__(
        self,
        *services: Service,
        registry: Registry | str = "memory://",
        secret: bytes | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise: str | None = None,
        strategy: str | Strategy = DEFAULT_STRATEGY,
        strategies: Mapping[str, str | Strategy] | None = None,
        default_timeout: float = DEFAULT_TIMEOUT,
        timings: Timings | None = None,
        caller_layers: Mapping[str, Middleware[Request]] | None = None,
        server_layers: Mapping[str, Middleware[Incoming]] | None = None,
        metadata: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        names = [service.name for service in services]
        if len(set(names)) != len(names):
            raise ValueError(f"a node hosts each service once, got {names}")
        self.services: Sequence[Service] = services
        self.timings = timings or Timings()
        self.clock = clock or SystemClock()
        self._owns_registry = isinstance(registry, str)
        self.registry = (
            open_registry(registry, clock=clock) if isinstance(registry, str) else registry
        )
        self.secret = secret if secret is not None else secrets.token_bytes(32)
        self.caller = Caller(
            self.registry,
            secret=self.secret,
            strategy=strategy,
            strategies=strategies,
            default_timeout=default_timeout,
            layers=caller_layers,
        )
        self.server = Server(
            Dispatcher(list(services), self.caller, server_layers),
            secret=self.secret,
            host=host,
            port=port,
        )
        self._advertise = advertise
        self._metadata = dict(metadata or {})
        self.instances: list[Instance] = []
        self._lease: LeaseKeeper | None = None
        self._stopped = asyncio.Event()
        self._closing = False
        self._starting = False
        self._stop_requested = False
        self._stop_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the services, listen, register; on failure undo what was done and raise."""
        started: list[Service] = []
        self._starting = True
        try:
            for service in self.services:
                await service.on_start()
                started.append(service)
            if self.services:
                await self.server.start()
                host, _, port = self.server.address.rpartition(":")
                address = f"{self._advertise or host}:{port}"
                instances = [
                    Instance(
                        id=f"{service.name}-{os.getpid()}-{secrets.token_hex(3)}",
                        service=service.name,
                        address=address,
                        version=service.version,
                        health=Health.HEALTHY,
                        metadata=self._metadata,
                    )
                    for service in self.services
                ]
                self._lease = LeaseKeeper(
                    self.registry,
                    lambda: instances,
                    ttl=self.timings.ttl,
                    interval=self.timings.heartbeat,
                    health=self._check_all,
                    clock=self.clock,
                )
                await self._lease.start()
                self.instances = instances
        except BaseException:
            self.services = started
            await self.aclose()
            raise
        finally:
            self._starting = False
        if self._stop_requested:  # a signal came while we were starting
            self.stop()

    async def aclose(self) -> None:
        """Drain and stop; idempotent."""
        if self._closing:
            await self._stopped.wait()
            return
        self._closing = True
        try:
            if self._lease is not None:
                await self._lease.stop()  # every instance leaves at once
            if self.instances:
                await asyncio.sleep(self.timings.grace)
            await self.server.drain(self.timings.drain)
            await self.server.aclose()
            for service in reversed(self.services):
                try:
                    await service.on_stop()
                except Exception:
                    log.exception("on_stop of %s failed", service.name)
            await self.caller.aclose()
            if self._owns_registry:
                await self.registry.aclose()
        finally:
            self._stopped.set()

    def stop(self) -> None:
        """Ask the node to stop (a signal handler, say); :meth:`wait_stopped` tells when done.

        Asked while :meth:`start` runs, the node stops as soon as it has started:
        tearing down under a start in progress would leave half of it behind.
        """
        if self._closing or self._stop_task is not None:
            return
        if self._starting:
            self._stop_requested = True
            return
        self._stop_task = asyncio.get_running_loop().create_task(self.aclose(), name="stop")

    async def abort(self) -> None:
        """Stop as a crash would look to others: connections cut at once, no
        deregistration (the lease runs out by itself), no grace, no drain."""
        if self._lease is not None:
            await self._lease.abandon()
        self.instances = []
        await self.server.aclose()
        await self.aclose()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- calling ------------------------------------------------------------------------

    def context(
        self, *, timeout: float | None = None, meta: Mapping[str, str] | None = None
    ) -> Context:
        """A root context for calls made outside any handler."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return Context(self.caller, deadline=deadline, meta=meta)

    def call(self, target: str, /, **args: Any) -> Awaitable[Any]:
        """``await node.call("greeter.hello", name="Ada")`` with a fresh root context."""
        return self.caller.invoke(target, args, context=None)

    def client(self, service: type[S]) -> TypedClient[S]:
        return TypedClient(self.caller, service, self.context())

    # -- registry upkeep ----------------------------------------------------------------

    async def _check_all(self) -> list[Health]:
        # All checks at once: the beat waits for the slowest, not for the sum.
        return list(await asyncio.gather(*(self._check(service) for service in self.services)))

    async def _check(self, service: Service) -> Health:
        try:
            async with asyncio.timeout(self.timings.health_timeout):
                healthy = await service.health()
        except Exception as exc:
            log.warning("health check of %s failed: %r", service.name, exc)
            return Health.UNHEALTHY
        return Health.HEALTHY if healthy else Health.UNHEALTHY

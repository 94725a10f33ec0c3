"""A node hosts services in one process: start, register, keep the lease, serve, drain.

::

    config = NodeConfig(registry="sqlite:///.flotilla/registry.db", secret=s)
    async with Node(Greeter(), config=config) as node:
        await node.call("greeter.hello", name="Ada")
        await node.wait_stopped()

A node is a list of parts (:mod:`flotilla.runtime.parts`), started in order and
stopped in reverse, once, by :meth:`Node.aclose` (idempotent)::

    start:  caller -> event backend (opened on first use) -> services' on_start
            -> event consumers -> listen -> register under a lease, keep it
    stop:   deregister -> keep serving for the grace period (callers' views catch up)
            -> refuse new calls, finish in-flight ones (bounded) -> close connections
            -> stop taking events, finish running handlers (bounded by the drain)
            -> services' on_stop -> close the event backend, the caller, then the
            registry if the node opened it

A node with no services is a pure client (what ``flotilla call`` uses).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

from flotilla.calls.client import Caller
from flotilla.calls.pipeline import Middleware
from flotilla.calls.typed_client import TypedClient
from flotilla.clock import Clock, SystemClock
from flotilla.context import Context, new_request_id
from flotilla.events.backend import EventBackend
from flotilla.events.consumer import Observer
from flotilla.events.emitter import Emitter
from flotilla.events.part import ConsumersPart, EventsPart
from flotilla.headers import Headers
from flotilla.registry import Health, Instance, Registry, open_registry
from flotilla.runtime.config import NodeConfig, Timings
from flotilla.runtime.dispatcher import Dispatcher, Incoming
from flotilla.runtime.lease import LeaseKeeper
from flotilla.runtime.parts import CallerPart, Part, ServerPart, ServicesPart
from flotilla.service import Service
from flotilla.transport.server import Server

__all__ = ["Node", "NodeConfig", "Timings", "secret_id"]

log = logging.getLogger("flotilla.runtime")

S = TypeVar("S", bound=Service)


def secret_id(secret: bytes) -> str:
    """A short public fingerprint of the cluster secret, published with each instance.

    It lets a caller (and ``flotilla ps``) tell an instance that was started with
    another secret without a handshake; it reveals nothing usable of the secret
    (an HMAC under it, cut to 8 bytes).
    """
    return hmac.new(secret, b"flotilla/secret-id", hashlib.sha256).hexdigest()[:16]


class Node:
    """Hosts ``services`` and calls others; use as ``async with`` or ``start()`` / ``aclose()``.

    ``config`` is the plain-data configuration (:class:`NodeConfig`); beside it
    go what cannot be data: a ``registry`` object to use instead of opening
    ``config.registry`` (the nodes of one test share one), likewise an
    ``events`` backend instead of ``config.events``, a ``clock``, client
    ``layers`` (:data:`~flotilla.calls.pipeline.CLIENT_STACK`),
    ``server_layers`` (:data:`~flotilla.runtime.dispatcher.SERVER_STACK`) and
    an ``event_observer`` told how each delivery ended (the test kit's).
    """

    def __init__(
        self,
        *services: Service,
        config: NodeConfig | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
        layers: Mapping[str, Middleware[Any]] | None = None,
        server_layers: Mapping[str, Middleware[Incoming]] | None = None,
        events: EventBackend | None = None,
        event_observer: Observer | None = None,
    ) -> None:
        names = [service.name for service in services]
        if len(set(names)) != len(names):
            raise ValueError(f"a node hosts each service once, got {names}")
        self.config = config = config or NodeConfig()
        self.services: Sequence[Service] = services
        self.timings = config.timings
        self.clock = clock or SystemClock()
        self._owns_registry = registry is None
        self.registry = registry or open_registry(config.registry, clock=clock)
        self.secret = config.secret if config.secret is not None else secrets.token_bytes(32)
        self.caller = Caller(
            self.registry,
            secret=self.secret,
            strategy=config.strategy,
            strategies=config.strategies,
            default_timeout=config.default_timeout,
            layers=layers,
        )
        # Fixed now, not at registration: events emitted by on_start name them too.
        self.instance_ids = {name: f"{name}-{secrets.token_hex(4)}" for name in names}
        self.events = EventsPart(config.events, backend=events, clock=clock)
        self.emitter = Emitter(self.events.backend, instances=self.instance_ids, clock=clock)
        self._event_observer = event_observer
        self.parts: list[Part] = [CallerPart(self.caller), self.events]
        self.server: Server | None = None
        self._lease: LeaseKeeper | None = None
        if services:
            self.parts += self._hosting_parts(server_layers)
        self.instances: list[Instance] = []
        self._started: list[Part] = []
        self._stopped = asyncio.Event()
        self._teardown: asyncio.Future[None] | None = None
        self._starting = False
        self._stop_requested = False

    def _hosting_parts(
        self, server_layers: Mapping[str, Middleware[Incoming]] | None
    ) -> list[Part]:
        """The parts of a node that hosts services: hooks, consumers, server, lease."""
        config, timings = self.config, self.timings
        self._consumers = consumers = ConsumersPart(
            self.services,
            self.events,
            invoker=self.caller,
            emitter=self.emitter,
            instances=self.instance_ids,
            policy=config.delivery,
            drain=timings.drain,
            clock=self.clock,
            observer=self._event_observer,
        )
        self.server = Server(
            Dispatcher(list(self.services), self.caller, server_layers, emitter=self.emitter),
            secret=self.secret,
            host=config.host,
            port=config.port,
        )
        self._server_part = ServerPart(self.server, grace=timings.grace, drain=timings.drain)
        self._lease = LeaseKeeper(
            self.registry,
            self._describe,
            ttl=timings.ttl,
            interval=timings.heartbeat,
            health=self._health,
            clock=self.clock,
        )
        return [ServicesPart(self.services), consumers, self._server_part, self._lease]

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every part in order; on failure stop those started, in reverse, and raise."""
        if self._teardown is not None:
            raise RuntimeError("a node that was stopped cannot start again; make a new one")
        self._starting = True
        try:
            for part in self.parts:
                await part.start()
                self._started.append(part)
        except BaseException:
            await self.aclose()
            raise
        finally:
            self._starting = False
        if self._stop_requested:  # a signal came while we were starting
            self.stop()

    async def aclose(self) -> None:
        """Stop every started part in reverse order; idempotent.

        The stopping runs in a task of the node's own: a caller cancelled while
        it waits is cancelled at once, and the parts still stop, all of them.
        """
        await asyncio.shield(self._begin_teardown())

    def _begin_teardown(self) -> asyncio.Future[None]:
        if self._teardown is None:
            self._teardown = asyncio.ensure_future(self._stop_parts())
        return self._teardown

    async def _stop_parts(self) -> None:
        try:
            while self._started:
                part = self._started.pop()
                try:
                    await part.stop()
                except Exception:
                    log.exception("stopping the %s of the node failed", part.name)
            if self._owns_registry:
                try:
                    await self.registry.aclose()
                except Exception:
                    log.exception("closing the registry failed")
        finally:
            self._stopped.set()

    def stop(self) -> None:
        """Ask the node to stop (a signal handler, say); :meth:`wait_stopped` tells when done.

        Asked while :meth:`start` runs, the node stops as soon as it has started:
        tearing down under a start in progress would leave half of it behind.
        """
        if self._starting:
            self._stop_requested = True
            return
        self._begin_teardown()

    async def abort(self) -> None:
        """Stop as a crash would look to others: connections cut at once, no
        deregistration (the lease runs out by itself), no grace, no drain, and
        running event handlers cut short (their events come back after ack_wait)."""
        if self._lease is not None and self._lease in self._started:
            self._started.remove(self._lease)
            await self._lease.abandon()
        if self.server is not None:
            await self._server_part.cut()
            await self._consumers.cut()
        await self.aclose()

    async def wait_stopped(self) -> None:
        """Return once the node has stopped (:meth:`stop`, :meth:`aclose`, a failed start)."""
        await self._stopped.wait()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def address(self) -> str:
        """``host:port`` where this node's services are reached (once started)."""
        if self.server is None:
            raise RuntimeError("a node without services does not listen")
        host, _, port = self.server.address.rpartition(":")
        return f"{self.config.advertise or host}:{port}"

    # -- calling ------------------------------------------------------------------------

    def context(
        self, *, timeout: float | None = None, meta: Mapping[str, str] | None = None
    ) -> Context:
        """A root context for calls made outside any handler."""
        deadline = None if timeout is None else time.monotonic() + timeout
        headers = Headers(deadline=deadline, meta=dict(meta or {}))
        return Context(self.caller, headers, emitter=self.emitter)

    def call(self, target: str, /, **args: Any) -> Awaitable[Any]:
        """``await node.call("greeter.hello", name="Ada")`` with a fresh root context."""
        return self.caller.invoke(target, args, context=None)

    def client(self, service: type[S]) -> TypedClient[S]:
        """A typed client for ``service`` under a fresh root context."""
        return TypedClient(self.caller, service, self.context())

    async def emit(self, topic: str, payload: Any, /, *, key: str | None = None) -> str:
        """Publish an event from outside any handler (see :meth:`Context.emit`); returns its id."""
        headers = Headers(request_id=new_request_id())
        envelope = await self.emitter.emit(topic, payload, key=key, headers=headers, source="")
        return envelope.id

    # -- registration ---------------------------------------------------------------------

    def _describe(self) -> list[Instance]:
        """The instances to register, once the server listens."""
        metadata = {
            **self.config.metadata,
            "pid": str(os.getpid()),
            "secret_id": secret_id(self.secret),
        }
        self.instances = [
            Instance(
                id=self.instance_ids[service.name],
                service=service.name,
                address=self.address,
                version=service.version,
                health=Health.HEALTHY,
                metadata=metadata,
                methods=service.method_table(),
            )
            for service in self.services
        ]
        return self.instances

    async def _health(self) -> list[Health]:
        # All checks at once: the beat waits for the slowest, not for the sum.
        return list(await asyncio.gather(*(self._check(service) for service in self.services)))

    async def _check(self, service: Service) -> Health:
        try:
            async with asyncio.timeout(self.timings.check_timeout):
                healthy = await service.health()
        except Exception as exc:
            log.warning("health check of %s failed: %r", service.name, exc)
            return Health.UNHEALTHY
        return Health.HEALTHY if healthy else Health.UNHEALTHY

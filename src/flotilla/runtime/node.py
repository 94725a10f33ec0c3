"""A node hosts services in one process: start, register, keep the lease, serve, drain.

::

    config = NodeConfig(registry="sqlite:///.flotilla/registry.db", secret=s)
    async with Node(Greeter(), config=config) as node:
        await node.call("greeter.hello", name="Ada")
        await node.wait_stopped()

A node is a list of parts (:mod:`flotilla.runtime.parts`), started in order and
stopped in reverse, once, by :meth:`Node.aclose` (idempotent)::

    start:  caller -> ops port (if configured) -> event backend (opened on first use)
            -> databases, outbox relays -> services' on_start -> health checks (a first
            round) -> event consumers -> listen -> register under a lease, keep it
    stop:   deregister -> keep serving for the grace period (callers' views catch up)
            -> refuse new calls, finish in-flight ones (bounded) -> close connections
            -> stop taking events, finish running handlers (bounded by the drain)
            -> stop the health checks -> services' on_stop -> relays, databases
            -> close the event backend -> close the ops port -> close the caller,
            then the registry if the node opened it

The ops port opens early and closes late so that probes see the whole life:
``/readyz`` says ``starting``, then ready, then ``stopping`` through the drain.
The node's :class:`~flotilla.resilience.signals.Signals` hub (``node.signals``)
is where its resilience layers report; ``node.breakers`` follows it.  A
service whose database cannot be reached is registered unhealthy (callers do
not pick it) until the database answers; the node itself starts.

Its :attr:`Node.state`::

    starting --every part started--> running --stop()/aclose()--> stopping --> stopped

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
from random import Random
from types import TracebackType
from typing import Any, TypeVar

from flotilla.calls.client import Caller
from flotilla.calls.typed_client import TypedClient
from flotilla.clock import Clock, SystemClock
from flotilla.context import Context, new_request_id
from flotilla.data.node_hooks import databases_of
from flotilla.events.backend import EventBackend
from flotilla.events.consumer import Observer
from flotilla.events.emitter import Emitter
from flotilla.events.part import EventsPart
from flotilla.headers import Headers
from flotilla.pipeline import Middleware
from flotilla.registry import Health, Instance, Registry, open_registry
from flotilla.resilience.faults import Faults
from flotilla.resilience.policy import Policy, PolicyLookup
from flotilla.resilience.signals import Signals
from flotilla.resilience.states import BreakerStates
from flotilla.runtime import resilience_layers
from flotilla.runtime.config import NodeConfig, Timings
from flotilla.runtime.dispatcher import Incoming
from flotilla.runtime.health import HealthMonitor
from flotilla.runtime.hosting import hosting_parts
from flotilla.runtime.lease import LeaseKeeper
from flotilla.runtime.ops_http import OpsServer
from flotilla.runtime.ops_routes import ops_routes
from flotilla.runtime.parts import CallerPart, Part
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
    ``layers`` (:data:`~flotilla.pipeline.CLIENT_STACK`),
    ``server_layers`` (:data:`~flotilla.runtime.dispatcher.SERVER_STACK`) and
    an ``event_observer`` told how each delivery ended (the test kit's).
    The outbox relays of the services' databases publish through the same
    event backend.

    ``policies`` answers the resilience policy of each service and method
    (default: ``config.resilience``); what the resilience layers did is
    emitted into :attr:`signals`.  Every caller retries
    (:class:`~flotilla.resilience.retry.Retry`), gets a circuit breaker per
    endpoint (:class:`~flotilla.resilience.breakers.Breakers`), a cap per
    endpoint when a policy sets one
    (:class:`~flotilla.resilience.endpoint_bulkhead.EndpointBulkhead`) and the
    fallbacks its services declare; a node that hosts services serves them
    behind a :class:`~flotilla.resilience.bulkhead.Bulkhead` and a
    :class:`~flotilla.resilience.faults.Faults` layer (``layers`` and
    ``server_layers`` may replace any of them; the list is
    :mod:`flotilla.runtime.resilience_layers`); :attr:`faults` switches
    injected faults on at run time, drawn from ``random`` (seed it for
    reproducible faults).
    """

    def __init__(
        self,
        *services: Service,
        config: NodeConfig | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
        layers: Mapping[str, Middleware[Any]] | None = None,
        server_layers: Mapping[str, Middleware[Incoming]] | None = None,
        policies: PolicyLookup | None = None,
        random: Random | None = None,
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
        self.policies: PolicyLookup = policies or config.resilience
        """The resilience policy of each service and method (``policies``, else the config's)."""
        self.signals = Signals()
        """Where this node's resilience layers report what they did."""
        self.breakers = BreakerStates(self.signals)
        self.random = random or Random()
        self.faults = Faults(self.policies, self.signals, clock=self.clock, random=self.random)
        self._owns_registry = registry is None
        self.registry = registry or open_registry(config.registry, clock=clock)
        self.secret = config.secret if config.secret is not None else secrets.token_bytes(32)
        layers = resilience_layers.client_layers(
            services,
            layers or {},
            policies=self.policies,
            signals=self.signals,
            clock=self.clock,
            random=self.random,
        )
        self.caller = Caller(
            self.registry,
            secret=self.secret,
            strategy=config.strategy,
            strategies=config.strategies,
            default_timeout=config.default_timeout,
            layers=layers,
            policies=self.policies,
            signals=self.signals,
        )
        # Fixed now, not at registration: events emitted by on_start name them too.
        self.instance_ids = {name: f"{name}-{secrets.token_hex(4)}" for name in names}
        self.events = EventsPart(config.events, backend=events, clock=clock)
        self.emitter = Emitter(self.events.backend, instances=self.instance_ids, clock=clock)
        self._event_observer = event_observer
        self.parts: list[Part] = [CallerPart(self.caller)]
        self.ops: OpsServer | None = None
        if config.ops_port is not None:
            host = config.ops_host or config.host
            self.ops = OpsServer(ops_routes(self), host=host, port=config.ops_port)
            self.parts.append(self.ops)
        self.parts.append(self.events)
        self.server: Server | None = None
        self.health: HealthMonitor | None = None
        self._lease: LeaseKeeper | None = None
        if services:
            hosting = hosting_parts(self, server_layers)
            self.health, self.server, self.faults = hosting.health, hosting.server, hosting.faults
            self._lease, self._consumers = hosting.lease, hosting.consumers
            self._server_part = hosting.server_part
            self.parts += hosting.parts
        self.instances: list[Instance] = []
        self._started: list[Part] = []
        self._stopped = asyncio.Event()
        self._teardown: asyncio.Future[None] | None = None
        self._starting = False
        self._stop_requested = False

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
    def state(self) -> str:
        """``starting``, ``running``, ``stopping`` or ``stopped`` (see the module docstring)."""
        if self._stopped.is_set():
            return "stopped"
        if self._teardown is not None:
            return "stopping"
        return "running" if len(self._started) == len(self.parts) else "starting"

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

    def client(self, service: type[S], *, policy: Policy | None = None) -> TypedClient[S]:
        """A typed client for ``service`` under a fresh root context.

        ``policy``: the resilience policy of its calls, over the configured one.
        """
        return TypedClient(self.caller, service, self.context(), policy=policy)

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
        if self.ops is not None:
            host, _, port = self.ops.address.rpartition(":")
            metadata["ops"] = f"{self.config.advertise or host}:{port}"
        self.instances = []
        for service in self.services:
            instance_id = self.instance_ids[service.name]
            for database in databases_of(service):
                database.instance = instance_id  # the source of the events it emits
            self.instances.append(
                Instance(
                    id=instance_id,
                    service=service.name,
                    address=self.address,
                    version=service.version,
                    health=self.health.health(service.name) if self.health else Health.UNKNOWN,
                    metadata=metadata,
                    methods=service.method_table(),
                )
            )
        return self.instances

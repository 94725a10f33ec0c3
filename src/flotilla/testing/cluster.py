"""A whole system in one process: every service on a node of its own, one memory registry.

::

    async with Cluster() as cluster:
        await cluster.add(Greeter(), replicas=2)
        await cluster.add(Front())
        assert await cluster.call("front.greet", name="Ada") == "Hello, Ada"

Calls cross real loopback connections and the real pipeline, so what passes
here passes between processes; only the registry, the event backend and the
clock are fakes.  With a :class:`FakeClock`, leases expire, and nak'd events
come back, when the test advances time, and not before.  ``cluster.events``
(:class:`~flotilla.testing.events.EventsKit`) shows what was emitted and
waits for events to be handled.

Faults can be injected into a service, a method, or one replica, to see what
the rest of the system makes of them (drawn reproducibly with ``seed``)::

    async with Cluster(seed=7) as cluster:
        slow, fast = await cluster.add(Greeter, replicas=2)
        cluster.inject("greeter.hello", FaultPolicy(delay=0.5, delay_fraction=1.0), node=slow)
        ...
        cluster.clear_faults()
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from flotilla.calls.typed_client import TypedClient
from flotilla.clock import Clock
from flotilla.context import Context
from flotilla.pipeline import Middleware
from flotilla.registry import MemoryRegistry
from flotilla.resilience.policy import FaultPolicy, PolicyLookup
from flotilla.runtime.config import NodeConfig, Timings
from flotilla.runtime.dispatcher import Incoming
from flotilla.runtime.node import Node
from flotilla.service import Service
from flotilla.testing.events import EventsKit

__all__ = ["Cluster", "wait_for"]

S = TypeVar("S", bound=Service)


class Cluster:
    """Nodes sharing a memory registry and a secret, plus a client node to call them from.

    Every node gets ``config`` (default: no grace period, a 2 s drain), with
    the cluster's secret, the client ``layers`` (a mapping shared by every
    node, or a function that makes one per node), the ``server_layers`` that a
    function makes per node, and the resilience ``policies``.  ``seed`` makes
    injected faults, and the jitter of retries and breakers, reproducible.
    """

    def __init__(
        self,
        config: NodeConfig | None = None,
        *,
        clock: Clock | None = None,
        layers: Mapping[str, Middleware[Any]]
        | Callable[[], Mapping[str, Middleware[Any]]]
        | None = None,
        server_layers: Callable[[], Mapping[str, Middleware[Incoming]]] | None = None,
        policies: PolicyLookup | None = None,
        seed: int | None = None,
    ) -> None:
        self.clock = clock
        self.registry = MemoryRegistry(clock)
        self.events = EventsKit(clock)
        # In one process every watcher sees a deregistration at once: no grace needed.
        config = config or NodeConfig(timings=Timings(grace=0.0, drain=2.0))
        self.config = config.replace(secret=config.secret or secrets.token_bytes(32))
        self.layers = layers
        self.server_layers = server_layers
        self.policies = policies
        # Each node draws its faults and jitter from a generator of its own, seeded from this one.
        self._seeds = random.Random(seed)
        self.client_node = self._node()
        self.nodes: list[Node] = []

    async def add(
        self, service: Service | Callable[[], Service], *, replicas: int = 1
    ) -> list[Node]:
        """Start ``replicas`` nodes hosting the service (a factory is called once per replica)."""
        if replicas > 1 and isinstance(service, Service):
            raise ValueError("pass a factory (the class, say) to start several replicas")
        started = []
        for _ in range(replicas):
            instance = service if isinstance(service, Service) else service()
            node = self._node(instance)
            await node.start()
            self.nodes.append(node)
            started.append(node)
        return started

    def _node(self, *services: Service) -> Node:
        return Node(
            *services,
            config=self.config,
            registry=self.registry,
            clock=self.clock,
            events=self.events.backend,
            event_observer=self.events.record,
            # A factory gives each node layers of its own: a layer that keeps
            # state (a breaker) or attaches to a node's view must not be shared.
            layers=self.layers() if callable(self.layers) else self.layers,
            server_layers=self.server_layers() if self.server_layers is not None else None,
            policies=self.policies,
            random=random.Random(self._seeds.getrandbits(64)),
        )

    def inject(self, target: str, faults: FaultPolicy, *, node: Node | None = None) -> None:
        """Inject ``faults`` into calls of ``target`` (``"service"`` or ``"service.method"``)
        on every node hosting the service, or on ``node`` alone (one replica)."""
        service, _, method = target.partition(".")
        hosts = self._hosts(service) if node is None else [node]
        if not hosts:
            raise ValueError(f"no node of this cluster hosts service {service!r}")
        for host in hosts:
            _check_target(host, service, method)
            host.faults.set(service, method or None, faults)

    def clear_faults(self) -> None:
        """Stop every fault injected at run time."""
        for node in self.nodes:
            node.faults.clear()

    def _hosts(self, service: str) -> list[Node]:
        return [node for node in self.nodes if any(s.name == service for s in node.services)]

    def context(self, *, timeout: float | None = None) -> Context:
        """A root context for calls from outside the system, with ``timeout`` if given."""
        return self.client_node.context(timeout=timeout)

    async def call(self, target: str, /, **args: Any) -> Any:
        """Call from outside the system, as ``flotilla call`` would."""
        return await self.client_node.call(target, **args)

    def client(self, service: type[S]) -> TypedClient[S]:
        """A typed client for ``service``, calling from outside the system."""
        return self.client_node.client(service)

    async def stop(self, node: Node) -> None:
        """Stop ``node`` gracefully (deregister, drain)."""
        await node.aclose()
        self.nodes.remove(node)

    async def crash(self, node: Node) -> None:
        """Stop ``node`` abruptly: no deregistration, connections cut, its lease left to expire."""
        await node.abort()
        self.nodes.remove(node)

    async def emit(self, topic: str, payload: Any, /, *, key: str | None = None) -> str:
        """Publish an event from outside the system; returns its id."""
        return await self.events.publish(topic, payload, key=key)

    async def aclose(self) -> None:
        """Stop every node (newest first), the client node, the event backend and the registry."""
        for node in reversed(self.nodes):
            await node.aclose()
        self.nodes.clear()
        await self.client_node.aclose()
        await self.events.aclose()
        await self.registry.aclose()

    async def __aenter__(self) -> Cluster:
        await self.client_node.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _check_target(node: Node, service: str, method: str) -> None:
    """A fault set on a name the node does not serve would silently do nothing: refuse it."""
    hosted = {s.name: s for s in node.services}
    if service not in hosted:
        raise ValueError(f"the node given does not host service {service!r}")
    methods = hosted[service].methods()
    if method and method not in methods:
        names = ", ".join(sorted(methods))
        raise ValueError(f"service {service!r} has no method {method!r} (its methods: {names})")


async def wait_for(
    predicate: Callable[[], bool], *, timeout: float = 5.0, interval: float = 0.01
) -> None:
    """Wait (in real time) until ``predicate()`` is true; ``TimeoutError`` after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls state that has no event to wait on
            await asyncio.sleep(interval)

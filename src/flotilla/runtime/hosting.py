"""The parts a node adds when it hosts services, assembled in their start order.

A node that hosts services starts, after its caller, ops port and event
backend: the services' databases and outbox relays, the services' ``on_start``
hooks, the health checks, the event consumers, the server (the services'
methods behind the server layers), and the lease that keeps them registered.
:func:`hosting_parts` builds them from the node's own objects (its caller,
emitter, event backend, policies, clock...) and hands them back as one
:class:`HostingParts`; the order of start and stop is the node's
(:mod:`flotilla.runtime.node`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flotilla.data.node_hooks import data_parts
from flotilla.events.part import ConsumersPart
from flotilla.pipeline import Middleware
from flotilla.resilience.faults import Faults
from flotilla.runtime import resilience_layers
from flotilla.runtime.dispatcher import Dispatcher, Incoming
from flotilla.runtime.health import HealthMonitor
from flotilla.runtime.lease import LeaseKeeper
from flotilla.runtime.parts import Part, ServerPart, ServicesPart
from flotilla.transport.server import Server

if TYPE_CHECKING:
    from flotilla.runtime.node import Node

__all__ = ["HostingParts", "hosting_parts"]


@dataclass(frozen=True)
class HostingParts:
    """What :func:`hosting_parts` built; :attr:`parts` is the list the node appends."""

    data: list[Part]
    """The services' databases and outbox relays (:func:`flotilla.data.node_hooks.data_parts`)."""
    services: ServicesPart
    health: HealthMonitor
    consumers: ConsumersPart
    server: Server
    server_part: ServerPart
    lease: LeaseKeeper
    faults: Faults
    """The fault switch the server layers use (a given ``faults`` layer, else the node's)."""

    @property
    def parts(self) -> list[Part]:
        """In start order: data, hooks, checks, consumers, server, lease."""
        return [
            *self.data,
            self.services,
            self.health,
            self.consumers,
            self.server_part,
            self.lease,
        ]


def hosting_parts(
    node: Node, server_layers: Mapping[str, Middleware[Incoming]] | None
) -> HostingParts:
    """The parts of ``node`` that host its services: hooks, checks, consumers, server, lease."""
    config, timings = node.config, node.timings
    health = HealthMonitor(
        node.services,
        interval=timings.heartbeat,
        timeout=timings.check_timeout,
        clock=node.clock,
    )
    consumers = ConsumersPart(
        node.services,
        node.events,
        invoker=node.caller,
        emitter=node.emitter,
        instances=node.instance_ids,
        policy=config.delivery,
        drain=timings.drain,
        clock=node.clock,
        observer=node._event_observer,
    )
    server, faults = _serving(node, server_layers)
    lease = LeaseKeeper(
        node.registry,
        node._describe,
        ttl=timings.ttl,
        interval=timings.heartbeat,
        health=health.healths,
        clock=node.clock,
    )
    data = data_parts(
        node.services,
        data_dir=config.data_dir,
        database=config.database,
        databases=config.databases,
        events=node.events,
        relay_policy=config.relay,
    )
    return HostingParts(
        data=list(data),
        services=ServicesPart(node.services),
        health=health,
        consumers=consumers,
        server=server,
        server_part=ServerPart(server, grace=timings.grace, drain=timings.drain),
        lease=lease,
        faults=faults,
    )


def _serving(
    node: Node, server_layers: Mapping[str, Middleware[Incoming]] | None
) -> tuple[Server, Faults]:
    """The server: the services' methods behind the server layers, and their fault switch."""
    faults = node.faults
    layers = resilience_layers.server_layers(
        server_layers,
        policies=node.policies,
        signals=node.signals,
        clock=node.clock,
        random=node.random,
        faults=faults,
    )
    if isinstance(layers["faults"], Faults):  # given: the switch is that one
        faults = layers["faults"]
    dispatcher = Dispatcher(list(node.services), node.caller, layers, emitter=node.emitter)
    server = Server(dispatcher, secret=node.secret, host=node.config.host, port=node.config.port)
    return server, faults

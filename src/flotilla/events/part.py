"""The events side of a node: its backend, and a consumer per ``@on_event`` handler.

Two parts of the node's lifecycle (the whole order is in :mod:`flotilla.runtime.parts`;
the ops port, data and health parts left out here)::

    start:  caller -> events -> services -> consumers -> server -> lease
    stop:   lease -> server (drained) -> consumers -> services -> events -> caller

* ``events`` (:class:`EventsPart`) holds the backend.  It opens it on first
  use (an emit, or the consumers' start), so a node that neither emits nor
  handles events never touches it; it is up before the ``on_start`` hooks and
  down after the ``on_stop`` hooks, so both may emit.
* ``consumers`` (:class:`ConsumersPart`) start after ``on_start`` (a handler may
  rely on what it set up) and before the server listens; they stop after the
  server drained (calls in flight may still emit to them) and before
  ``on_stop``, letting running handlers finish within the drain time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from flotilla.clock import Clock
from flotilla.context import Context, Invoker
from flotilla.errors import Unavailable
from flotilla.events import EVENT_BACKENDS
from flotilla.events.backend import EventBackend, Subscription
from flotilla.events.consumer import Consumer, Observer
from flotilla.events.emitter import Emitter
from flotilla.events.envelope import Envelope
from flotilla.events.policy import DeliveryPolicy
from flotilla.service import EventSpec, Service

__all__ = ["ConsumersPart", "EventsPart"]

log = logging.getLogger("flotilla.events")


class EventsPart:
    """The node's event backend: opened from ``url`` on first use (or given), closed last."""

    name = "events"

    def __init__(
        self, url: str, *, backend: EventBackend | None = None, clock: Clock | None = None
    ) -> None:
        self.url = url
        self._backend = backend
        self._owns = backend is None
        self._clock = clock
        self._closed = False

    async def backend(self) -> EventBackend:
        """The backend, opened now if it was not yet."""
        if self._closed:
            raise Unavailable("the node stopped: its event backend is closed")
        if self._backend is None:
            self._backend = EVENT_BACKENDS.open(self.url, clock=self._clock)
        return self._backend

    async def publish(self, envelope: Envelope) -> None:
        """Publish through the backend (what the outbox relays of the node call)."""
        backend = self._backend or await self.backend()
        await backend.publish(envelope)

    async def start(self) -> None:
        pass  # opened on first use; the URL's scheme was checked with the config

    async def stop(self) -> None:
        self._closed = True
        if self._owns and self._backend is not None:
            await self._backend.aclose()


class ConsumersPart:
    """A :class:`Consumer` per ``@on_event`` handler of the node's services."""

    name = "consumers"

    def __init__(
        self,
        services: Sequence[Service],
        events: EventsPart,
        *,
        invoker: Invoker,
        emitter: Emitter,
        instances: Mapping[str, str],
        policy: DeliveryPolicy,
        drain: float,
        clock: Clock | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.services = services
        self.events = events
        self.invoker = invoker
        self.emitter = emitter
        self.instances = instances
        self.policy = policy
        self.drain = drain
        self.clock = clock
        self.observer = observer
        self.consumers: list[Consumer] = []

    async def start(self) -> None:
        handlers = [(s, spec) for s in self.services for spec in s.event_handlers()]
        if not handlers:
            return
        backend = await self.events.backend()
        for service, spec in handlers:
            consumer = self._consumer(backend, service, spec)
            try:
                await consumer.start()
            except BaseException:
                await self.stop()
                raise
            self.consumers.append(consumer)

    async def stop(self) -> None:
        await self._stop(self.drain)

    async def cut(self) -> None:
        """Stop as a crash would: running handlers cancelled, their deliveries left unacked."""
        await self._stop(0.0)

    async def _stop(self, drain: float) -> None:
        # All at once: the drain bounds the whole stop, not each consumer's.
        consumers, self.consumers = self.consumers, []
        await asyncio.gather(*(consumer.stop(drain) for consumer in consumers))

    def _consumer(self, backend: EventBackend, service: Service, spec: EventSpec) -> Consumer:
        instance = self.instances[service.name]
        group = spec.group or service.name
        subscription = Subscription(
            topic=spec.topic, group=group, instance=instance, broadcast=spec.broadcast
        )
        if spec.broadcast:  # each instance is a group of its own (see backend.py)
            group = f"{group}@{instance}"
        return Consumer(
            backend,
            subscription,
            _Invoke(service, spec, self.invoker, self.emitter, group),
            payload_type=spec.payload_type,
            name=f"{service.name}.{spec.attribute}",
            policy=spec.delivery or self.policy,
            clock=self.clock,
            observer=self.observer,
        )


class _Invoke:
    """Calls a handler with its payload and, if it takes one, the event's context."""

    def __init__(
        self,
        service: Service,
        spec: EventSpec,
        invoker: Invoker,
        emitter: Emitter,
        group: str,
    ) -> None:
        self.service = service.name
        self.group = group
        self.method = getattr(service, spec.attribute)
        self.spec = spec
        self.invoker = invoker
        self.emitter = emitter

    async def __call__(self, payload: Any, envelope: Envelope) -> None:
        arguments = {self.spec.payload_param: payload}
        if self.spec.context_param is not None:
            arguments[self.spec.context_param] = Context(
                self.invoker,
                envelope.headers,
                service=self.service,
                emitter=self.emitter,
                event=envelope,
                group=self.group,
            )
        await self.method(**arguments)

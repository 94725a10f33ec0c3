"""The lease keeper: keeps a node's instances registered (interim, per-instance heartbeats)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from flotilla.clock import Clock
from flotilla.errors import NotFound
from flotilla.registry import Health, Instance, Registry

__all__ = ["LeaseKeeper"]

log = logging.getLogger("flotilla.runtime")


class LeaseKeeper:
    """Registers the node's instances, keeps them alive, registers again when they were lost."""

    name = "lease"

    def __init__(
        self,
        registry: Registry,
        instances: Callable[[], Sequence[Instance]],
        *,
        ttl: float,
        interval: float,
        health: Callable[[], Awaitable[Sequence[Health]]] | None,
        clock: Clock,
    ) -> None:
        self.registry = registry
        self._instances = instances
        self.ttl = ttl
        self.interval = interval
        self._health = health
        self._clock = clock
        self.instances: list[Instance] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.instances = list(self._instances())
        for instance in self.instances:
            await self.registry.register(instance, ttl=self.ttl)
        self._task = asyncio.create_task(self._beat(), name="lease")

    async def stop(self) -> None:
        await self.abandon()
        for instance in self.instances:
            try:
                await self.registry.deregister(instance.id)
            except Exception as exc:
                log.warning("deregistering %s failed (its lease will expire): %s", instance.id, exc)

    async def abandon(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _beat(self) -> None:
        while True:
            await self._clock.sleep(self.interval)
            healths: Sequence[Health] = (
                await self._health() if self._health else [Health.HEALTHY] * len(self.instances)
            )
            for instance, health in zip(self.instances, healths, strict=True):
                try:
                    await self.registry.heartbeat(instance.id, health=health)
                except NotFound:
                    log.warning("lease of %s was lost; registering again", instance.id)
                    renewed = msgspec.structs.replace(instance, health=health)
                    with contextlib.suppress(Exception):
                        await self.registry.register(renewed, ttl=self.ttl)
                except Exception as exc:
                    log.warning("heartbeat of %s failed: %s", instance.id, exc)

"""The lease keeper: a node's instances registered under one lease, kept alive, healed.

::

    start:  grant(ttl) -> register each instance under the lease -> loop
    loop:   every `interval` of the clock:
              health() -> set_health for each instance whose health changed -> keepalive
              NotFound (lease ran out, registry file replaced, registry restarted)
                  -> grant a new lease, register every instance again with its health
              any other error -> one warning per distinct failure, try again next beat
    stop:   end the loop, revoke (every instance leaves at once)
    abandon: end the loop, revoke nothing (what others see of a crash)

Re-registering on ``NotFound`` is what an etcd client does when a keepalive
finds its lease expired: a registration lost behind the node's back (a long
pause, a deleted registry file) heals within a beat instead of leaving a
healthy node invisible until it restarts.

``health`` says each instance's health at each beat; a node passes the
health part's last results (:mod:`flotilla.runtime.health`), so a beat never
waits for a check to run.  A ``health`` that raises counts as every instance
``UNHEALTHY``: a node that cannot tell whether it is well should not be
picked, and the lease is still renewed, so a broken check never costs the
registration itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from flotilla.aio import cancel_and_wait
from flotilla.clock import Clock
from flotilla.errors import ConfigError, NotFound
from flotilla.registry.base import Health, Instance, Registry

__all__ = ["LeaseKeeper"]

log = logging.getLogger("flotilla.runtime")

HealthCheck = Callable[[], Awaitable[Sequence[Health]]]


class LeaseKeeper:
    """Keeps a node's instances registered under one lease: grant, register, keep alive,
    re-register."""

    name = "lease"

    def __init__(
        self,
        registry: Registry,
        instances: Callable[[], Sequence[Instance]],
        *,
        ttl: float,
        interval: float,
        health: HealthCheck | None,
        clock: Clock,
    ) -> None:
        if not 0 < interval < ttl:
            raise ConfigError(
                f"the keepalive interval ({interval!r} s) must be positive and shorter than"
                f" the lease ttl ({ttl!r} s)"
            )
        self.registry = registry
        self._get_instances = instances
        self._ttl = ttl
        self._interval = interval
        self._health = health
        self._clock = clock
        self.instances: list[Instance] = []
        """What is registered, with the health last published (read at :meth:`start`)."""
        self.lease: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: str | None = None  # the failure last warned about, until recovery
        self._lost = False  # the lease was found gone and is not registered again yet
        self._stopped = False

    async def start(self) -> None:
        """Grant a lease, register every instance under it, start keeping it alive.

        On failure nothing stays registered (the lease is revoked) and the error is raised.
        """
        if self._task is not None or self._stopped:
            raise RuntimeError("a lease keeper starts once")
        self.instances = list(self._get_instances())
        self.lease = await self._register_all()
        self._task = asyncio.create_task(self._keep(), name="lease keeper")

    async def stop(self) -> None:
        """End the loop and revoke the lease; a failure is logged, never raised.  Idempotent."""
        lease = await self._end_loop()
        if lease is None:
            return
        await self._revoke_quietly(lease)

    async def abandon(self) -> None:
        """End the loop and leave the lease to expire, as a crash would."""
        await self._end_loop()

    async def _end_loop(self) -> str | None:
        """Stop the loop (once); the lease to revoke, if there is one."""
        if self._stopped:
            return None
        self._stopped = True
        if self._task is not None:
            await cancel_and_wait(self._task, log)
        lease, self.lease = self.lease, None
        return lease

    # -- the loop ---------------------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            try:
                await self._beat()
            except Exception as exc:
                failure = f"{type(exc).__name__}: {exc}"
                if failure != self._failure:
                    self._failure = failure
                    log.warning("keeping lease %s alive failed, trying again: %s",
                                self.lease, failure)  # fmt: skip
                continue
            if self._failure is not None:
                self._failure = None
                log.warning("keeping lease %s alive works again", self.lease)

    async def _beat(self) -> None:
        healths = await self._check()
        try:
            for index, (instance, health) in enumerate(zip(self.instances, healths, strict=True)):
                if health != instance.health:
                    await self.registry.set_health(instance.id, health)
                    self.instances[index] = msgspec.structs.replace(instance, health=health)
            assert self.lease is not None  # set by start, before the loop
            await self.registry.keepalive(self.lease)
        except NotFound:
            if not self._lost:  # once per loss, however many beats the healing takes
                self._lost = True
                ids = ", ".join(instance.id for instance in self.instances)
                log.warning("lease %s was lost (expired, revoked or the registry was replaced);"
                            " registering %s again", self.lease, ids)  # fmt: skip
            self.instances = [
                msgspec.structs.replace(instance, health=health)
                for instance, health in zip(self.instances, healths, strict=True)
            ]
            self.lease = await self._register_all()
            self._lost = False

    async def _check(self) -> Sequence[Health]:
        if self._health is None:
            return [Health.HEALTHY] * len(self.instances)
        try:
            healths = await self._health()
        except Exception as exc:
            log.warning("health check failed, reporting unhealthy: %r", exc)
            return [Health.UNHEALTHY] * len(self.instances)
        if len(healths) != len(self.instances):
            raise ValueError(
                f"health() gave {len(healths)} values for {len(self.instances)} instances"
            )
        return healths

    async def _register_all(self) -> str:
        """A new lease with every instance under it; revoked again if any registration fails."""
        lease = await self.registry.grant(self._ttl)
        try:
            for instance in self.instances:
                await self.registry.register(instance, lease=lease)
        except BaseException:
            await self._revoke_quietly(lease)
            raise
        return lease

    async def _revoke_quietly(self, lease: str) -> None:
        try:
            await self.registry.revoke(lease)
        except Exception as exc:
            log.warning("revoking lease %s failed (it will expire by itself): %s", lease, exc)

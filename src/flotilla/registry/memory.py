"""The in-process registry: leases in a dict, expiry read from a :class:`Clock`.

Nothing deletes an expired lease on a timer.  Every read filters by
``clock.time()``, so an instance whose lease ran out is gone for readers at
that instant, whether or not anybody called in.  A watcher sleeps until either
a write wakes it (an :class:`asyncio.Event` replaced on every change) or the
clock reaches the next expiry among the instances it can see; so expiry wakes
it with no background task and no polling, and a fake clock drives it exactly.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncGenerator, Awaitable

import msgspec

from flotilla.aio import wait_first
from flotilla.clock import Clock, SystemClock
from flotilla.errors import FailedPrecondition, NotFound
from flotilla.registry.base import Health, Instance, check_ttl

__all__ = ["MemoryRegistry"]


class _Lease(msgspec.Struct):
    instance: Instance
    ttl: float
    expires_at: float
    """``clock.time()`` at which the instance stops being live (at, not after)."""


class MemoryRegistry:
    """A :class:`~flotilla.registry.base.Registry` for one process (tests, single-node apps)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._leases: dict[str, _Lease] = {}
        # Replaced (after being set) on every change: a watcher keeps the event
        # it saw before reading, so a change made while it reads is not missed.
        self._changed = asyncio.Event()
        self._closed = False

    async def register(self, instance: Instance, *, ttl: float) -> None:
        """Add or replace ``instance`` with a lease of ``ttl`` seconds."""
        self._check_open()
        check_ttl(ttl)
        now = self._clock.time()
        # Collect leases that ran out here, on a write, so the dict does not
        # grow with instances that died without deregistering.
        for dead in [k for k, lease in self._leases.items() if lease.expires_at <= now]:
            del self._leases[dead]
        self._leases[instance.id] = _Lease(instance, ttl, now + ttl)
        self._notify()

    async def heartbeat(self, instance_id: str, *, health: Health | None = None) -> None:
        """Renew the lease for its ttl and optionally change the health.

        Raises :class:`~flotilla.errors.NotFound` when the lease already ran
        out or the id is unknown.
        """
        self._check_open()
        now = self._clock.time()
        lease = self._leases.get(instance_id)
        if lease is None or lease.expires_at <= now:
            self._leases.pop(instance_id, None)
            raise NotFound(f"no live instance {instance_id!r} in the registry; register it again")
        lease.expires_at = now + lease.ttl
        if health is not None and health != lease.instance.health:
            lease.instance = msgspec.structs.replace(lease.instance, health=health)
            self._notify()
        # A bare renewal changes no snapshot: no need to wake anyone.  A watcher
        # sleeping until the old expiry wakes, sees nothing changed, and sleeps
        # until the new one.

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance at once; an unknown id is not an error."""
        self._check_open()
        if self._leases.pop(instance_id, None) is not None:
            self._notify()

    async def list(self, service: str | None = None) -> builtins.list[Instance]:
        """Live instances of ``service`` (or of all services), sorted by id."""
        self._check_open()
        return self._snapshot(service)[0]

    async def watch(
        self, service: str | None = None
    ) -> AsyncGenerator[builtins.list[Instance], None]:
        """Yield the live instances now, then after every change; ends on :meth:`aclose`."""
        last: builtins.list[Instance] | None = None
        while not self._closed:
            changed = self._changed
            snapshot, next_expiry = self._snapshot(service)
            if snapshot != last:
                last = snapshot
                # A copy: the consumer may mutate what it gets, and ``last`` is
                # what the next snapshot is compared with.
                yield builtins.list(snapshot)
                # Time passed while the consumer held the snapshot: look again
                # before waiting.
                continue
            waits: builtins.list[Awaitable[object]] = [changed.wait()]
            if next_expiry is not None:
                waits.append(self._clock.sleep(next_expiry - self._clock.time()))
            await wait_first(*waits)

    async def aclose(self) -> None:
        """Drop every lease and end every active watch; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._leases.clear()
        self._notify()

    def _snapshot(self, service: str | None) -> tuple[builtins.list[Instance], float | None]:
        """The live instances of ``service`` and the earliest time one of them expires."""
        now = self._clock.time()
        live = [
            lease
            for lease in self._leases.values()
            if lease.expires_at > now and (service is None or lease.instance.service == service)
        ]
        live.sort(key=lambda lease: lease.instance.id)
        next_expiry = min((lease.expires_at for lease in live), default=None)
        return [lease.instance for lease in live], next_expiry

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the registry is closed")

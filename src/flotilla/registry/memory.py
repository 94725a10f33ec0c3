"""The in-process registry: leases and instances in dicts, expiry read from a :class:`Clock`.

Nothing deletes an expired lease on a timer.  Every read filters by
``clock.time()``, so the instances of a lease that ran out are gone for
readers at that instant, whether or not anybody called in.  A watcher sleeps
until either a write wakes it (an :class:`asyncio.Event` replaced on every
change) or the clock reaches the next expiry among the leases of the
instances it can see; so expiry wakes it with no background task and no
polling, and a fake clock drives it exactly.
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
from collections.abc import AsyncGenerator, Awaitable

import msgspec

from flotilla.aio import wait_first
from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConfigError, FailedPrecondition, NotFound
from flotilla.registry.base import Health, Instance, check_ttl, lease_not_found

__all__ = ["MemoryRegistry"]


class _Lease(msgspec.Struct):
    ttl: float
    expires_at: float
    """``clock.time()`` at which the lease stops being live (at, not after)."""


class _Entry(msgspec.Struct):
    instance: Instance
    lease: str


class MemoryRegistry:
    """A :class:`~flotilla.registry.base.Registry` for one process (tests, single-node apps)."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._leases: dict[str, _Lease] = {}
        self._entries: dict[str, _Entry] = {}
        # Replaced (after being set) on every change: a watcher keeps the event
        # it saw before reading, so a change made while it reads is not missed.
        self._changed = asyncio.Event()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, *, clock: Clock | None = None) -> MemoryRegistry:
        """The registry for ``memory://`` (which takes no path)."""
        _, _, rest = url.partition("://")
        if rest:
            raise ConfigError(f"memory:// takes no path, got {url!r}")
        return cls(clock)

    async def grant(self, ttl: float) -> str:
        """A new lease id, live for ``ttl`` seconds."""
        self._check_open()
        check_ttl(ttl)
        self._collect()
        lease = secrets.token_hex(8)
        self._leases[lease] = _Lease(ttl, self._clock.time() + ttl)
        return lease

    async def register(self, instance: Instance, *, lease: str) -> None:
        """Add or replace ``instance`` under ``lease``; :class:`NotFound` if it is not live."""
        self._check_open()
        self._live_lease(lease)
        self._entries[instance.id] = _Entry(instance, lease)
        self._notify()

    async def keepalive(self, lease: str) -> None:
        """Renew ``lease`` for its ttl; :class:`NotFound` when it expired or was revoked."""
        self._check_open()
        found = self._live_lease(lease)
        found.expires_at = self._clock.time() + found.ttl
        # A bare renewal changes no snapshot: no need to wake anyone.  A watcher
        # sleeping until the old expiry wakes, sees nothing changed, and sleeps
        # until the new one.

    async def set_health(self, instance_id: str, health: Health) -> None:
        """Change the instance's health; :class:`NotFound` when it is not live."""
        self._check_open()
        entry = self._entries.get(instance_id)
        if entry is None or not self._is_live(entry.lease):
            raise NotFound(f"no live instance {instance_id!r} in the registry; register it again")
        if health != entry.instance.health:
            entry.instance = msgspec.structs.replace(entry.instance, health=health)
            self._notify()

    async def revoke(self, lease: str) -> None:
        """Remove ``lease`` and every instance under it; an unknown lease is not an error."""
        self._check_open()
        if self._leases.pop(lease, None) is None:
            return
        gone = [id_ for id_, entry in self._entries.items() if entry.lease == lease]
        for id_ in gone:
            del self._entries[id_]
        if gone:
            self._notify()

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance at once; an unknown id is not an error."""
        self._check_open()
        if self._entries.pop(instance_id, None) is not None:
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
        self._entries.clear()
        self._notify()

    def _snapshot(self, service: str | None) -> tuple[builtins.list[Instance], float | None]:
        """The live instances of ``service`` and the earliest time the lease of one ends."""
        now = self._clock.time()
        live: builtins.list[Instance] = []
        next_expiry: float | None = None
        for entry in self._entries.values():
            lease = self._leases.get(entry.lease)
            if lease is None or lease.expires_at <= now:
                continue
            if service is None or entry.instance.service == service:
                live.append(entry.instance)
                if next_expiry is None or lease.expires_at < next_expiry:
                    next_expiry = lease.expires_at
        live.sort(key=lambda instance: instance.id)
        return live, next_expiry

    def _live_lease(self, lease: str) -> _Lease:
        if not self._is_live(lease):
            raise lease_not_found(lease)
        return self._leases[lease]

    def _is_live(self, lease: str) -> bool:
        found = self._leases.get(lease)
        return found is not None and found.expires_at > self._clock.time()

    def _collect(self) -> None:
        """Forget leases that ran out, and their instances.

        Done on :meth:`grant`, which a process that died without revoking is
        replaced through, so the dicts do not grow with the dead.
        """
        now = self._clock.time()
        dead = {lease for lease, found in self._leases.items() if found.expires_at <= now}
        if not dead:
            return
        for lease in dead:
            del self._leases[lease]
        for id_ in [id_ for id_, entry in self._entries.items() if entry.lease in dead]:
            del self._entries[id_]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPrecondition("the registry is closed")

"""What a service registry is: instances, leases, and the Protocol every backend implements.

An instance is registered under a lease of ``ttl`` seconds, which may cover
several instances (all of one node's).  The owner renews the lease with
:meth:`Registry.keepalive`; an instance whose lease ran out is gone for every
reader, whether or not anybody deleted it.  Readers never poll
the registry on the call path: they keep a local view fed by
:meth:`Registry.watch`.
"""

from __future__ import annotations

import builtins
import enum
import math
from collections.abc import AsyncGenerator
from typing import Any, Protocol

import msgspec

from flotilla.errors import InvalidArgument, NotFound

__all__ = ["Health", "Instance", "MethodInfo", "Registry", "check_ttl", "lease_not_found"]


class Health(enum.StrEnum):
    """How an instance reports itself: callers pick only ``HEALTHY`` ones.

    ``UNKNOWN`` is an instance that has not reported yet (or whose status could
    not be read); it is not picked either.
    """

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class MethodInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One ``@rpc`` method as an instance publishes it: enough to call it by name.

    Callers by name (``ctx.call("svc.m")``, ``flotilla call``), the gateway's
    OpenAPI and ``flotilla describe`` read it from the registry instead of
    importing the service's class.
    """

    name: str
    timeout: float | None = None
    idempotent: bool = False
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    """JSON Schema of the arguments (an object, one property per parameter)."""
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    """JSON Schema of the result."""


class Instance(msgspec.Struct, frozen=True, kw_only=True):
    """One running copy of a service, as the registry knows it."""

    id: str
    service: str
    address: str
    """``host:port`` where the instance's RPC server listens."""
    version: str = "0"
    health: Health = Health.UNKNOWN
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    """Free labels; nodes set ``pid`` and, under ``flotilla run``, ``replica``."""
    methods: tuple[MethodInfo, ...] = ()
    """The service's method table, sorted by name."""

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


class Registry(Protocol):
    """A store of leased instances, watched by every caller.

    A node asks for one lease (:meth:`grant`), registers each of its instances
    under it, and renews it with one :meth:`keepalive` per beat, however many
    instances it hosts; when it stops, :meth:`revoke` removes them all at once,
    and when it dies, they all vanish together when the lease runs out.  An
    instance is live exactly while its lease is live.

    Backends: :mod:`flotilla.registry.memory` (one process),
    :mod:`flotilla.registry.sqlite` (one machine, many processes) and
    :mod:`flotilla.registry.nats_kv` (a cluster).  Every backend passes
    ``tests/conformance/test_registry.py``.
    """

    async def grant(self, ttl: float) -> str:
        """A new lease id, live for ``ttl`` seconds unless renewed.

        Raises :class:`flotilla.errors.InvalidArgument` for a ttl that is not a
        positive finite number.
        """
        ...

    async def register(self, instance: Instance, *, lease: str) -> None:
        """Add ``instance`` under ``lease``, or replace the instance of the same id.

        Raises :class:`flotilla.errors.NotFound` when the lease is not live.
        """
        ...

    async def keepalive(self, lease: str) -> None:
        """Renew ``lease`` for its ttl, counted from now.

        Raises :class:`flotilla.errors.NotFound` when the lease already expired
        or was revoked: its instances are gone, the owner must grant a new lease
        and register them again.
        """
        ...

    async def set_health(self, instance_id: str, health: Health) -> None:
        """Change the health an instance reports.

        Raises :class:`flotilla.errors.NotFound` when the instance is not live.
        """
        ...

    async def revoke(self, lease: str) -> None:
        """Remove ``lease`` and all its instances at once; an unknown or expired lease is not
        an error (it has no live instances left to remove)."""
        ...

    async def deregister(self, instance_id: str) -> None:
        """Remove one instance at once (its lease lives on); an unknown id is not an error."""
        ...

    async def list(self, service: str | None = None) -> list[Instance]:
        """Live instances of ``service``, or of all services; sorted by id."""
        ...

    # ``builtins.list``: inside this class body a bare ``list`` names the method above.
    def watch(self, service: str | None = None) -> AsyncGenerator[builtins.list[Instance], None]:
        """Yield the live instances now, then again after every change.

        A change is a registration, a deregistration, a health change, or a
        lease running out or revoked.  Each snapshot is sorted by id.
        Consecutive snapshots are never equal.  Ends when the registry closes.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks, end every watch; idempotent."""
        ...


def lease_not_found(lease: str) -> NotFound:
    """The error for a lease that is not live: one wording for every backend."""
    return NotFound(f"lease {lease!r} is not live (expired or revoked); grant a new one")


def check_ttl(ttl: float) -> None:
    """Refuse a lease that could never be live (<= 0) or never expire (inf, nan)."""
    if not (math.isfinite(ttl) and ttl > 0):
        raise InvalidArgument(f"a lease ttl must be a positive number of seconds, not {ttl!r}")

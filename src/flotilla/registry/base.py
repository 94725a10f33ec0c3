"""What a service registry is: instances, leases, and the Protocol every backend implements.

An instance is registered with a lease of ``ttl`` seconds.  The owner renews the
lease with :meth:`Registry.heartbeat`; an instance whose lease ran out is gone
for every reader, whether or not anybody deleted its row.  Readers never poll
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

from flotilla.errors import InvalidArgument

__all__ = ["Health", "Instance", "MethodInfo", "Registry", "check_ttl"]


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

    Backends: :mod:`flotilla.registry.memory` (one process) and
    :mod:`flotilla.registry.sqlite` (one machine, many processes).  Every backend
    passes ``tests/conformance/test_registry.py``.
    """

    async def register(self, instance: Instance, *, ttl: float) -> None:
        """Add or replace ``instance`` with a lease of ``ttl`` seconds."""
        ...

    async def heartbeat(self, instance_id: str, *, health: Health | None = None) -> None:
        """Renew the lease (for the same ttl) and optionally change the health.

        Raises :class:`flotilla.errors.NotFound` when the lease already expired
        or the instance was deregistered: the owner must register again.
        """
        ...

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance at once; removing an unknown id is not an error."""
        ...

    async def list(self, service: str | None = None) -> list[Instance]:
        """Live instances (lease not expired) of ``service``, or of all services; sorted by id."""
        ...

    # ``builtins.list``: inside this class body a bare ``list`` names the method above.
    def watch(self, service: str | None = None) -> AsyncGenerator[builtins.list[Instance], None]:
        """Yield the live instances now, then again after every change.

        A change is a registration, a deregistration, a health change, or a
        lease running out.  Each snapshot is sorted by id.  Consecutive
        snapshots are never equal.
        """
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks; idempotent."""
        ...


def check_ttl(ttl: float) -> None:
    """Refuse a lease that could never be live (<= 0) or never expire (inf, nan)."""
    if not (math.isfinite(ttl) and ttl > 0):
        raise InvalidArgument(f"a lease ttl must be a positive number of seconds, not {ttl!r}")

"""The caller's local view of the registry: which endpoints of each service can take a call now.

One watch per service feeds an :class:`EndpointSet`; picking an endpoint reads
memory only, never the registry.  An endpoint is *available* when its instance
is healthy and it is not ejected.  Two things eject an endpoint for a while:

* the transport, when a connection to its address fails, drops or is refused
  at the handshake (:meth:`EndpointSet.mark_down`, with a backoff that doubles
  while the address keeps failing), so a killed or misconfigured replica stops
  getting calls at once rather than when its lease expires;
* any client layer, through :meth:`Directory.eject` and
  :meth:`Directory.restore` (a circuit breaker, an outlier detector): the
  balancer never needs to know why an endpoint is missing.

When most of a service's endpoints are out (ejected or unhealthy), the few
left would take the whole load and likely fall in turn; past the service's
``panic_threshold`` balancing offers :attr:`EndpointSet.panic_list` instead
(Envoy's *panic mode*): every registered endpoint but those no connection can
reach.  Which list to offer is the balancer's choice; the set keeps both
ready, so a pick costs the same in panic or not.

The set also keeps the service's method table, as its instances publish it, so
a call by name knows the method's timeout and whether it is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import NamedTuple

from flotilla.balancing import Endpoint
from flotilla.errors import DeadlineExceeded, Unavailable
from flotilla.registry import Health, Instance, Registry
from flotilla.registry.base import MethodInfo

__all__ = ["Directory", "Ejection", "EndpointSet"]

log = logging.getLogger("flotilla.calls")

# How long an address that refused or dropped a connection is left out, doubling
# on each failure in a row: long enough not to hammer a dead port, short enough
# that a replica restarted under the same address is used again quickly.
DOWN_INITIAL = 0.5
DOWN_MAX = 8.0
FIRST_SNAPSHOT_TIMEOUT = 5.0
UNREACHABLE = "unreachable"
"""The reason :meth:`EndpointSet.mark_down` ejects with."""


class Ejection(NamedTuple):
    """Why and until when (``time.monotonic()``) an endpoint is left out of balancing."""

    until: float
    reason: str


class EndpointSet:
    """The endpoints of one service, kept in step with the registry by a watch."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.endpoints: dict[str, Endpoint] = {}
        self.available: tuple[Endpoint, ...] = ()
        self.panic_list: tuple[Endpoint, ...] = ()
        """Every endpoint but those ejected as unreachable: what panic balances over."""
        self.shortfall = 0.0
        """The fraction of the endpoints that are not available (0.0 with none registered)."""
        self.methods: dict[str, MethodInfo] = {}
        """The method table by name, as the instances publish it."""
        self.ejected: dict[str, Ejection] = {}
        """By endpoint id: what is left out of balancing now, and why."""
        # address -> (monotonic time it may be tried again, current backoff)
        self._down: dict[str, tuple[float, float]] = {}
        self._recheck_at = float("inf")

    def update(self, instances: list[Instance]) -> None:
        """Adopt a registry snapshot; endpoints that stay keep their load statistics."""
        current = {}
        for instance in instances:
            endpoint = self.endpoints.get(instance.id)
            if endpoint is None:
                endpoint = Endpoint(instance)
            else:
                endpoint.instance = instance  # a health or metadata change
            current[instance.id] = endpoint
        self.endpoints = current
        self.methods = _method_table(instances)
        addresses = {endpoint.address for endpoint in current.values()}
        for address in [a for a in self._down if a not in addresses]:
            del self._down[address]  # gone from the registry: nothing to remember
        for endpoint_id in [e for e in self.ejected if e not in current]:
            del self.ejected[endpoint_id]
        self._refresh()

    def eject(self, endpoint: Endpoint, until: float, reason: str) -> None:
        """Leave ``endpoint`` out of balancing until ``until`` (``time.monotonic()``)."""
        if endpoint.id not in self.endpoints:
            return  # gone from the registry meanwhile
        self.ejected[endpoint.id] = Ejection(until, reason)
        self._refresh()

    def restore(self, endpoint: Endpoint) -> None:
        """Put an ejected ``endpoint`` back at once (a breaker that closed, say)."""
        if self.ejected.pop(endpoint.id, None) is not None:
            self._refresh()

    def mark_down(self, address: str) -> None:
        """Eject the endpoints at ``address`` for a backoff (doubling while it keeps failing)."""
        now = time.monotonic()
        until, backoff = self._down.get(address, (0.0, DOWN_INITIAL / 2))
        if until > now:
            return  # already out: the calls that shared one failed connect count once
        if now > until + DOWN_MAX:
            backoff = DOWN_INITIAL / 2  # it had been fine for a while: start over
        backoff = min(backoff * 2, DOWN_MAX)
        self._down[address] = (now + backoff, backoff)
        for endpoint in self.endpoints.values():
            if endpoint.address == address:
                self.ejected[endpoint.id] = Ejection(now + backoff, UNREACHABLE)
        self._refresh()

    def pick_list(self) -> tuple[Endpoint, ...]:
        """The endpoints available now (what a balancing strategy may choose from).

        It also brings :attr:`shortfall` and :attr:`panic_list` up to date.
        """
        if time.monotonic() >= self._recheck_at:
            self._refresh()
        return self.available

    def _refresh(self) -> None:
        now = time.monotonic()
        self._recheck_at = float("inf")
        available = []
        panic = []
        for endpoint_id in [e for e, ejection in self.ejected.items() if ejection.until <= now]:
            del self.ejected[endpoint_id]  # served its time
        for endpoint in self.endpoints.values():
            ejection = self.ejected.get(endpoint.id)
            if ejection is None or ejection.reason != UNREACHABLE:
                # Panic may try an unhealthy or ejected endpoint, never one no
                # connection reaches: that attempt could only fail.
                panic.append(endpoint)
            if endpoint.instance.health is not Health.HEALTHY:
                continue
            if ejection is not None:
                self._recheck_at = min(self._recheck_at, ejection.until)
                continue
            available.append(endpoint)
        self.available = tuple(available)
        self.panic_list = tuple(panic)
        total = len(self.endpoints)
        self.shortfall = 1 - len(available) / total if total else 0.0


def _method_table(instances: list[Instance]) -> dict[str, MethodInfo]:
    """The methods of a healthy instance that publishes a table (else of any that does).

    Replicas of one version publish the same table; during a rolling upgrade
    they may differ, and a healthy instance's table is the one calls will meet.
    """
    ranked = sorted(
        (instance for instance in instances if instance.methods),
        key=lambda instance: instance.health is not Health.HEALTHY,
    )
    return {method.name: method for method in ranked[0].methods} if ranked else {}


class Directory:
    """All the endpoint sets of one caller; owns the watch task behind each."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._sets: dict[str, EndpointSet] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # The sets that have their first snapshot: what every call looks up.
        self._open: dict[str, EndpointSet] = {}

    def get(self, service: str) -> EndpointSet | None:
        """The set of ``service`` if it is already watched and has its first snapshot."""
        return self._open.get(service)

    async def open(self, service: str, *, deadline: float | None = None) -> EndpointSet:
        """The set of ``service``, starting its watch and waiting for the first snapshot.

        The wait ends at ``deadline`` (absolute, ``time.monotonic()``) or after
        :data:`FIRST_SNAPSHOT_TIMEOUT`, whichever comes first.
        """
        if self._closed:
            raise Unavailable(f"cannot look up {service!r}: the caller is closed")
        ready = self._ready.get(service)
        if ready is None:
            endpoint_set = self._sets[service] = EndpointSet(service)
            ready = self._ready[service] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._follow(endpoint_set, ready), name=f"watch {service}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        wait = FIRST_SNAPSHOT_TIMEOUT
        caller_limited = deadline is not None and deadline - time.monotonic() < wait
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        try:
            async with asyncio.timeout(wait):
                await asyncio.shield(ready)
        except TimeoutError:
            if caller_limited:
                message = f"deadline passed while waiting for the registry for {service!r}"
                raise DeadlineExceeded(message) from None
            raise Unavailable(f"registry did not answer for service {service!r}") from None
        return self._sets[service]

    def mark_down(self, address: str) -> None:
        """Eject every endpoint at ``address`` (of any service) for a backoff."""
        for endpoint_set in self._sets.values():
            if any(endpoint.address == address for endpoint in endpoint_set.endpoints.values()):
                endpoint_set.mark_down(address)

    def eject(self, endpoint: Endpoint, until: float, reason: str) -> None:
        """Leave ``endpoint`` out of its service's balancing until ``until`` (monotonic)."""
        endpoint_set = self._sets.get(endpoint.instance.service)
        if endpoint_set is not None:
            endpoint_set.eject(endpoint, until, reason)

    def restore(self, endpoint: Endpoint) -> None:
        """Put an ejected ``endpoint`` back into balancing at once."""
        endpoint_set = self._sets.get(endpoint.instance.service)
        if endpoint_set is not None:
            endpoint_set.restore(endpoint)

    async def known_services(self) -> list[str]:
        """Every service the registry knows now (for an error message; reads the registry)."""
        try:
            instances = await self.registry.list()
        except Exception:
            return []
        return sorted({instance.service for instance in instances})

    async def _follow(self, endpoint_set: EndpointSet, ready: asyncio.Future[None]) -> None:
        backoff = 0.1
        while True:
            try:
                async with contextlib.aclosing(self.registry.watch(endpoint_set.service)) as watch:
                    async for snapshot in watch:
                        endpoint_set.update(snapshot)
                        if not ready.done():
                            ready.set_result(None)
                            self._open[endpoint_set.service] = endpoint_set
                        backoff = 0.1
                return  # the registry closed its watches: we are shutting down
            except Exception as exc:
                # Keep the last view: stale endpoints beat none while the registry is away.
                log.warning(
                    "watch of %s failed (%s); retrying in %.1fs", endpoint_set.service, exc, backoff
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def aclose(self) -> None:
        """Stop every watch, failing those still waiting for a first snapshot; idempotent."""
        self._closed = True
        for ready in self._ready.values():
            if not ready.done():
                ready.set_exception(Unavailable("the caller closed while waiting for the registry"))
                ready.exception()  # retrieved: nobody may be waiting
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""The caller's local view of the registry: which endpoints of each service can take a call now.

One watch per service feeds an :class:`EndpointSet`; picking an endpoint reads
memory only, never the registry.  An endpoint is *available* when its instance
is healthy and it has not been marked down; the transport marks an address
down when a connection to it fails or drops, for a backoff period, so a
killed replica stops getting calls at once rather than when its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from flotilla.balancing import Endpoint
from flotilla.errors import DeadlineExceeded, Unavailable
from flotilla.registry import Health, Instance, Registry

__all__ = ["Directory", "EndpointSet"]

log = logging.getLogger("flotilla.calls")

# How long an address that refused or dropped a connection is left out, doubling
# on each failure in a row: long enough not to hammer a dead port, short enough
# that a replica restarted under the same address is used again quickly.
DOWN_INITIAL = 0.5
DOWN_MAX = 8.0
FIRST_SNAPSHOT_TIMEOUT = 5.0


class EndpointSet:
    """The endpoints of one service, kept in step with the registry by a watch."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.endpoints: dict[str, Endpoint] = {}
        self.available: tuple[Endpoint, ...] = ()
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
        addresses = {endpoint.address for endpoint in current.values()}
        for address in [a for a in self._down if a not in addresses]:
            del self._down[address]  # gone from the registry: nothing to remember
        self._refresh()

    def mark_down(self, address: str) -> None:
        """Leave ``address`` out until a backoff passes (doubling while it keeps failing)."""
        now = time.monotonic()
        until, backoff = self._down.get(address, (0.0, DOWN_INITIAL / 2))
        if until > now:
            return  # already out: the calls that shared one failed connect count once
        if now > until + DOWN_MAX:
            backoff = DOWN_INITIAL / 2  # it had been fine for a while: start over
        backoff = min(backoff * 2, DOWN_MAX)
        self._down[address] = (now + backoff, backoff)
        self._refresh()

    def pick_list(self) -> tuple[Endpoint, ...]:
        """The endpoints available now (what a balancing strategy may choose from)."""
        if time.monotonic() >= self._recheck_at:
            self._refresh()
        return self.available

    def _refresh(self) -> None:
        now = time.monotonic()
        self._recheck_at = float("inf")
        available = []
        for endpoint in self.endpoints.values():
            if endpoint.instance.health is not Health.HEALTHY:
                continue
            down = self._down.get(endpoint.address)
            if down is not None and down[0] > now:
                self._recheck_at = min(self._recheck_at, down[0])
                continue
            available.append(endpoint)
        self.available = tuple(available)


class Directory:
    """All the endpoint sets of one caller; owns the watch task behind each."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._sets: dict[str, EndpointSet] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, service: str) -> EndpointSet | None:
        """The set of ``service`` if it is already watched and has its first snapshot."""
        ready = self._ready.get(service)
        return self._sets[service] if ready is not None and ready.done() else None

    async def open(self, service: str, *, deadline: float | None = None) -> EndpointSet:
        """The set of ``service``, starting its watch and waiting for the first snapshot.

        The wait ends at ``deadline`` (absolute, ``time.monotonic()``) or after
        :data:`FIRST_SNAPSHOT_TIMEOUT`, whichever comes first.
        """
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
        for endpoint_set in self._sets.values():
            if any(endpoint.address == address for endpoint in endpoint_set.endpoints.values()):
                endpoint_set.mark_down(address)

    async def _follow(self, endpoint_set: EndpointSet, ready: asyncio.Future[None]) -> None:
        backoff = 0.1
        while True:
            try:
                async with contextlib.aclosing(self.registry.watch(endpoint_set.service)) as watch:
                    async for snapshot in watch:
                        endpoint_set.update(snapshot)
                        if not ready.done():
                            ready.set_result(None)
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
        """Stop every watch; idempotent."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

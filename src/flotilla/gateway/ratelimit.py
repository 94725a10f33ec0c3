"""Per-client rate limits: a token bucket per key, in this process or shared through Redis.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a
second; each request takes one.  A request that finds the bucket empty is
refused with the seconds until a token is back (``Retry-After``).  The key is
the client: the token's subject when the request has one, else its IP
address, so that one user cannot spend another's allowance; a route with a
limit of its own adds its name to the key (its buckets are its own).

Backends (:class:`Limiter` is their Protocol), chosen by URL:

* ``memory://`` (:class:`MemoryLimiter`): buckets in this process.  Right for
  one gateway process; with several, each allows the full rate.
* ``redis://host:port/db`` (:class:`~flotilla.gateway.redis_limiter.RedisLimiter`):
  one bucket per key for every gateway, updated by one Lua script (atomic on
  the Redis server, timed by the server's clock).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Protocol

from flotilla.clock import Clock, SystemClock
from flotilla.errors import ConfigError
from flotilla.gateway.routes import RateLimit

__all__ = ["Limiter", "MemoryLimiter", "open_limiter", "retry_after_header"]


class Limiter(Protocol):
    """Takes a token from a client's bucket, or says how long until one is there."""

    async def acquire(self, key: str, limit: RateLimit) -> float:
        """0.0 when the request may go on; else the seconds until a token is back."""
        ...

    async def aclose(self) -> None:
        """Release connections; idempotent."""
        ...


class MemoryLimiter:
    """Token buckets in this process, at most ``max_keys`` of them (least recently used go).

    A forgotten bucket comes back full, which errs on the client's side: the
    cap is what keeps a flood of distinct addresses from growing memory.
    """

    def __init__(self, *, clock: Clock | None = None, max_keys: int = 100_000) -> None:
        self._clock = clock or SystemClock()
        self._max_keys = max_keys
        # key -> (tokens, when they were counted, on the monotonic clock)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def acquire(self, key: str, limit: RateLimit) -> float:
        now = self._clock.monotonic()
        tokens, then = self._buckets.pop(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - then) * limit.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / limit.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    async def aclose(self) -> None:
        self._buckets.clear()


def open_limiter(url: str, *, clock: Clock | None = None) -> Limiter:
    """The limiter a URL names: ``memory://`` or ``redis://...``."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return MemoryLimiter(clock=clock)
    if scheme in ("redis", "rediss"):
        from flotilla.gateway.redis_limiter import RedisLimiter

        return RedisLimiter(url)
    raise ConfigError(f"rate limit backend {url!r}: use memory:// or redis://host:port")


def retry_after_header(wait: float) -> str:
    """``Retry-After`` in whole seconds, rounded up (a client waiting that long finds a token)."""
    return str(max(1, math.ceil(wait)))

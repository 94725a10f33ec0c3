"""Token buckets in Redis, shared by every gateway process (redis-py, asyncio).

One Lua script reads, refills and takes from a bucket in one step: Redis runs
a script atomically, so two gateways never both take the last token, and the
script reads the time from the Redis server (``TIME``), so gateways whose
clocks disagree still share one bucket fairly.  A bucket expires once it
would be full again, so idle clients cost Redis nothing.

When Redis cannot be reached the request is let through (logged, at most
every ``_WARN_EVERY`` seconds): a limiter that is down should not take the
whole edge down with it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from flotilla.gateway.routes import RateLimit

__all__ = ["RedisLimiter"]

log = logging.getLogger("flotilla.gateway")

_WARN_EVERY = 10.0
_PREFIX = "flotilla:ratelimit:"

# KEYS[1]: the bucket; ARGV: rate (tokens/s), burst.  Returns the wait as text
# (a Lua number returned as such is truncated to an integer).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local then_ = tonumber(state[2])
if tokens == nil or then_ == nil then
  tokens = burst
  then_ = now
end
tokens = math.min(burst, tokens + math.max(0, now - then_) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisLimiter:
    """A :class:`~flotilla.gateway.ratelimit.Limiter` on the Redis server at ``url``."""

    def __init__(self, url: str, *, prefix: str = _PREFIX) -> None:
        self.url = url
        self._prefix = prefix
        self._client: Any = redis.Redis.from_url(url, socket_timeout=1.0)
        self._take = self._client.register_script(_TAKE)
        self._warned = 0.0

    async def acquire(self, key: str, limit: RateLimit) -> float:
        try:
            reply = await self._take(keys=[self._prefix + key], args=[limit.rate, limit.burst])
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return 0.0
        return float(reply)

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning("rate limits off: Redis at %s does not answer (%s)", self.url, exc)

    async def aclose(self) -> None:
        await self._client.aclose()

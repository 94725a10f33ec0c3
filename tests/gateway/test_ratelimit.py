"""Token buckets per client: exact arithmetic on a fake clock, 429 + Retry-After over HTTP."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from flotilla.errors import ConfigError
from flotilla.gateway.ratelimit import MemoryLimiter, open_limiter, retry_after_header
from flotilla.gateway.redis_limiter import RedisLimiter
from flotilla.gateway.routes import RateLimit, Route
from flotilla.testing import FakeClock

from ..servers import REDIS_URL, require_server
from .conftest import running_gateway
from .notes_system import ROUTES

LIMIT = RateLimit(rate=2.0, burst=3)


async def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    assert [await limiter.acquire("ada", LIMIT) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.acquire("ada", LIMIT) == 0.5  # one token at 2/s
    await clock.advance(0.25)
    assert await limiter.acquire("ada", LIMIT) == 0.25
    await clock.advance(0.25)
    assert await limiter.acquire("ada", LIMIT) == 0.0
    await clock.advance(100)  # never more than the burst
    assert [await limiter.acquire("ada", LIMIT) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


async def test_each_client_has_its_own_bucket_and_old_ones_are_forgotten() -> None:
    limiter = MemoryLimiter(clock=FakeClock(), max_keys=2)
    one = RateLimit(rate=1.0, burst=1)
    assert await limiter.acquire("a", one) == 0.0
    assert await limiter.acquire("b", one) == 0.0
    assert await limiter.acquire("a", one) == 1.0
    assert await limiter.acquire("c", one) == 0.0  # "b" is the least recently used: gone
    assert await limiter.acquire("a", one) > 0  # "a" was kept, still empty
    assert await limiter.acquire("b", one) == 0.0  # "b" comes back full


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after_header(w) for w in (0.01, 1.0, 1.2, 9.98)] == ["1", "1", "2", "10"]


def test_an_unknown_backend_is_refused() -> None:
    with pytest.raises(ConfigError, match="memory:// or redis://"):
        open_limiter("etcd://x")


async def test_over_http_the_limit_is_429_with_retry_after_per_client(
    token: Callable[..., str],
) -> None:
    slow = RateLimit(rate=0.1, burst=2)
    async with running_gateway(rate_limit=slow) as (_, client):
        statuses = [(await client.get("/notes")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        refused = await client.get("/notes")
        assert refused.headers["retry-after"] == "10"
        assert refused.json()["error"]["code"] == "resource_exhausted"
        # A user is limited as a user, not by the address shared with the anonymous client.
        for _ in range(2):
            ok = await client.get("/whoami", headers={"Authorization": token("ada")})
            assert ok.status_code == 200
        limited = await client.get("/whoami", headers={"Authorization": token("ada")})
        assert limited.status_code == 429
        other = await client.get("/whoami", headers={"Authorization": token("grace")})
        assert other.status_code == 200


@pytest.fixture
def redis_url() -> str:
    require_server("Redis", REDIS_URL, "FLOTILLA_TEST_REDIS_URL")
    return REDIS_URL


async def test_redis_buckets_are_shared_by_every_gateway(redis_url: str) -> None:
    prefix = f"flotilla:test:{secrets.token_hex(4)}:"
    first, second = RedisLimiter(redis_url, prefix=prefix), RedisLimiter(redis_url, prefix=prefix)
    try:
        one = RateLimit(rate=0.5, burst=2)
        assert await first.acquire("ada", one) == 0.0
        assert await second.acquire("ada", one) == 0.0
        wait = await first.acquire("ada", one)
        assert 1.9 < wait <= 2.0  # one token at 0.5/s, less the instant since the first
        assert await second.acquire("grace", one) == 0.0
    finally:
        await first.aclose()
        await second.aclose()


async def test_over_http_with_redis_the_limit_is_429(redis_url: str) -> None:
    limiter = RedisLimiter(redis_url, prefix=f"flotilla:test:{secrets.token_hex(4)}:")
    async with running_gateway(rate_limit=RateLimit(rate=0.1, burst=1), limiter_object=limiter) as (
        _,
        client,
    ):
        assert (await client.get("/notes")).status_code == 200
        refused = await client.get("/notes")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"


async def test_an_unreachable_redis_lets_requests_through() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0")
    try:
        assert await limiter.acquire("ada", LIMIT) == 0.0
    finally:
        await limiter.aclose()


async def test_a_trusted_proxy_names_the_client_others_do_not() -> None:
    limit = RateLimit(rate=0.1, burst=1)
    async with running_gateway(rate_limit=limit, trusted_proxies=("127.0.0.1",)) as (_, client):
        for address in ("10.0.0.1", "10.0.0.2"):
            response = await client.get("/notes", headers={"X-Forwarded-For": address})
            assert response.status_code == 200
        again = await client.get("/notes", headers={"X-Forwarded-For": "10.0.0.1"})
        assert again.status_code == 429
    async with running_gateway(rate_limit=limit) as (_, client):
        assert (
            await client.get("/notes", headers={"X-Forwarded-For": "10.0.0.1"})
        ).status_code == 200
        # Not trusted: the header is ignored, both requests are the same client.
        assert (
            await client.get("/notes", headers={"X-Forwarded-For": "10.0.0.2"})
        ).status_code == 429


async def test_a_client_cannot_choose_its_address_behind_a_trusted_proxy() -> None:
    # The trusted proxy appends the address it was called from; what is left of
    # it is written by the client and names nobody.
    limit = RateLimit(rate=0.1, burst=1)
    trusted = ("127.0.0.1", "10.9.9.9")
    async with running_gateway(rate_limit=limit, trusted_proxies=trusted) as (_, client):
        first = await client.get("/notes", headers={"X-Forwarded-For": "1.1.1.1, 10.0.0.1"})
        assert first.status_code == 200
        spoofed = await client.get("/notes", headers={"X-Forwarded-For": "2.2.2.2, 10.0.0.1"})
        assert spoofed.status_code == 429
        # Through a second trusted proxy, the client is still the hop before it.
        chained = {"X-Forwarded-For": "3.3.3.3, 10.0.0.1, 10.9.9.9"}
        assert (await client.get("/notes", headers=chained)).status_code == 429
        other = {"X-Forwarded-For": "10.0.0.1, 10.0.0.2, 10.9.9.9"}
        assert (await client.get("/notes", headers=other)).status_code == 200


async def test_a_route_with_a_limit_of_its_own_has_buckets_of_its_own() -> None:
    strict = Route("GET", "/strict", "notes.search", rate_limit=RateLimit(rate=0.1, burst=1))
    routes = [*ROUTES, strict]
    async with running_gateway(rate_limit=RateLimit(rate=0.1, burst=3), routes=routes) as (
        _,
        client,
    ):
        assert (await client.get("/strict")).status_code == 200
        assert (await client.get("/strict")).status_code == 429
        # The other routes share the gateway's limit, untouched by /strict's.
        for _ in range(3):
            assert (await client.get("/notes")).status_code == 200
        assert (await client.get("/notes")).status_code == 429

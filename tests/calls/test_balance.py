"""The balancing middleware: pick an available endpoint, requeue unsent calls, keep load figures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from flotilla.balancing import Endpoint, RequestView
from flotilla.calls.balance import MAX_REQUEUES, Balance
from flotilla.calls.endpoints import Directory, EndpointSet
from flotilla.calls.request import Request
from flotilla.errors import ConnectFailed, DeadlineExceeded, Internal, NotFound, Unavailable
from flotilla.registry import Health, Instance


def inst(id: str, port: int) -> Instance:
    return Instance(id=id, service="svc", address=f"127.0.0.1:{port}", health=Health.HEALTHY)


class First:
    """Always the first endpoint offered: would pick a failed one again if it were offered."""

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        return endpoints[0]


class StubDirectory:
    """A directory with fixed sets; ``open`` counts how often it is asked."""

    def __init__(self, sets: dict[str, EndpointSet]) -> None:
        self.sets = sets
        self.opened: list[str] = []

    def get(self, service: str) -> EndpointSet | None:
        return None

    async def open(self, service: str, *, deadline: float | None = None) -> EndpointSet:
        self.opened.append(service)
        return self.sets.setdefault(service, EndpointSet(service))


def setup(n: int) -> tuple[Balance, EndpointSet]:
    endpoints = EndpointSet("svc")
    endpoints.update([inst(f"e{i}", 9000 + i) for i in range(n)])
    directory: Any = StubDirectory({"svc": endpoints})
    return Balance(directory, First()), endpoints


def request() -> Request:
    return Request(service="svc", method="m", args={}, request_id="r")


def inflight(endpoints: EndpointSet) -> list[int]:
    return [e.inflight for e in endpoints.endpoints.values()]


async def test_no_endpoint_is_unavailable_naming_the_service() -> None:
    balance, _ = setup(0)
    req = Request(service="catalog", method="get", args={}, request_id="r")

    async def never(req: Request) -> None:
        raise AssertionError("nothing to call")

    with pytest.raises(Unavailable, match="'catalog'"):
        await balance(req, never)


async def test_sets_the_endpoint_and_returns_the_result() -> None:
    balance, endpoints = setup(2)
    seen: list[str] = []

    async def send(req: Request) -> str:
        assert req.endpoint is not None
        seen.append(req.endpoint.id)
        return "ok"

    req = request()
    assert await balance(req, send) == "ok"
    assert seen == ["e0"]
    assert req.endpoint is endpoints.endpoints["e0"]


async def test_connect_failed_requeues_to_another_endpoint() -> None:
    balance, _ = setup(3)
    tried: list[str] = []

    async def send(req: Request) -> str:
        assert req.endpoint is not None
        tried.append(req.endpoint.id)
        if req.endpoint.id == "e0":
            raise ConnectFailed("refused")
        return req.endpoint.id

    assert await balance(request(), send) == "e1"
    assert tried == ["e0", "e1"]


async def test_requeues_are_bounded_and_never_repeat_an_endpoint() -> None:
    balance, endpoints = setup(6)
    tried: list[str] = []

    async def refuse(req: Request) -> None:
        assert req.endpoint is not None
        tried.append(req.endpoint.id)
        raise ConnectFailed("refused")

    with pytest.raises(ConnectFailed):
        await balance(request(), refuse)
    assert len(tried) == MAX_REQUEUES + 1
    assert len(set(tried)) == len(tried)
    assert inflight(endpoints) == [0] * 6


async def test_every_endpoint_unreachable_fails_as_unavailable() -> None:
    balance, endpoints = setup(2)
    tried: list[str] = []

    async def refuse(req: Request) -> None:
        assert req.endpoint is not None
        tried.append(req.endpoint.id)
        raise ConnectFailed("refused")

    with pytest.raises(Unavailable):
        await balance(request(), refuse)
    assert sorted(tried) == ["e0", "e1"]
    assert inflight(endpoints) == [0, 0]


async def test_other_errors_are_not_requeued() -> None:
    balance, endpoints = setup(3)
    tried: list[str] = []

    async def fail(req: Request) -> None:
        assert req.endpoint is not None
        tried.append(req.endpoint.id)
        raise Unavailable("connection lost", retryable=False)  # may have run: not requeued

    with pytest.raises(Unavailable, match="connection lost"):
        await balance(request(), fail)
    assert tried == ["e0"]
    assert inflight(endpoints) == [0, 0, 0]


async def test_inflight_counts_during_and_returns_to_zero() -> None:
    balance, endpoints = setup(1)
    during: list[int] = []

    async def ok(req: Request) -> str:
        assert req.endpoint is not None
        during.append(req.endpoint.inflight)
        return "ok"

    async def fail(req: Request) -> None:
        raise Internal("boom")

    await balance(request(), ok)
    assert during == [1]
    assert inflight(endpoints) == [0]
    with pytest.raises(Internal):
        await balance(request(), fail)
    assert inflight(endpoints) == [0]


async def test_inflight_returns_to_zero_on_cancellation() -> None:
    balance, endpoints = setup(1)
    started = asyncio.Event()

    async def hang(req: Request) -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(balance(request(), hang))
    await started.wait()
    assert inflight(endpoints) == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inflight(endpoints) == [0]


async def test_latency_is_recorded() -> None:
    balance, endpoints = setup(1)

    async def slow(req: Request) -> None:
        await asyncio.sleep(0.03)

    await balance(request(), slow)
    assert endpoints.endpoints["e0"].latency() >= 0.025


async def slow_answer(req: Request) -> str:
    await asyncio.sleep(0.02)
    return "ok"


@pytest.mark.parametrize("error", [Unavailable, Internal, DeadlineExceeded])
async def test_a_fast_failure_costs_the_endpoint_latency(error: type[Exception]) -> None:
    # A replica that fails fast must not look fast to the strategy.
    balance, endpoints = setup(1)
    endpoint = endpoints.endpoints["e0"]
    await balance(request(), slow_answer)
    before = endpoint.latency()
    assert before >= 0.015

    async def fail(req: Request) -> None:
        raise error("boom")

    with pytest.raises(error):
        await balance(request(), fail)
    # Twice the average (less what it decayed in the milliseconds since it was read).
    assert endpoint.latency() >= 2 * before * 0.99
    assert inflight(endpoints) == [0]


async def test_a_fast_not_found_is_recorded_as_its_real_time() -> None:
    # Not found is a good answer about the request, not a fault of the endpoint.
    balance, endpoints = setup(1)
    endpoint = endpoints.endpoints["e0"]
    await balance(request(), slow_answer)
    before = endpoint.latency()

    async def missing(req: Request) -> None:
        raise NotFound("no such thing")

    with pytest.raises(NotFound):
        await balance(request(), missing)
    assert endpoint.latency() <= before  # a fast sample pulls the average down, if anything
    assert inflight(endpoints) == [0]


async def test_connect_seconds_is_reset_for_each_attempt() -> None:
    # The first pick connected (taking time) and then failed to send; the
    # second pick reuses an open connection: none of that connect is its own.
    balance, endpoints = setup(2)
    seen: list[tuple[str, float]] = []

    async def send(req: Request) -> str:
        assert req.endpoint is not None
        seen.append((req.endpoint.id, req.connect_seconds))
        if req.endpoint.id == "e0":
            req.connect_seconds = 0.5
            raise ConnectFailed("closed before the call went out")
        await asyncio.sleep(0.02)
        return "ok"

    assert await balance(request(), send) == "ok"
    assert seen == [("e0", 0.0), ("e1", 0.0)]
    assert endpoints.endpoints["e1"].latency() >= 0.015  # its own time, nothing subtracted


async def test_opens_the_service_on_first_use() -> None:
    balance, _ = setup(1)
    directory: Any = balance.directory

    async def ok(req: Request) -> str:
        return "ok"

    await balance(request(), ok)
    assert directory.opened == ["svc"]


class GatedRegistry:
    """A registry whose first snapshot comes only when the test says so."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def watch(self, service: str | None = None) -> Any:
        await self.release.wait()
        yield [inst("e0", 9000)]
        await asyncio.Event().wait()


async def test_concurrent_first_calls_all_wait_for_the_first_snapshot() -> None:
    # Two calls to a service not yet watched: the second must wait for the
    # first snapshot as the first does, not see an empty view and fail.
    registry = GatedRegistry()
    directory = Directory(registry)  # type: ignore[arg-type]
    balance = Balance(directory, First())

    async def ok(req: Request) -> str:
        return "ok"

    try:
        first = asyncio.create_task(balance(request(), ok))
        await asyncio.sleep(0)
        second = asyncio.create_task(balance(request(), ok))
        await asyncio.sleep(0.01)
        registry.release.set()
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert results == ["ok", "ok"]
    finally:
        await directory.aclose()

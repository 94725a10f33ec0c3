"""The balancing layer: one attempt per try on an available endpoint, requeue what never left,
keep the load figures the next pick weighs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec
import pytest

from flotilla import codec
from flotilla.balancing import Endpoint, RequestView
from flotilla.calls.balance import Balance
from flotilla.calls.endpoints import Directory, EndpointSet
from flotilla.errors import (
    ConfigError,
    ConnectFailed,
    DeadlineExceeded,
    FlotillaError,
    HandshakeFailed,
    Internal,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from flotilla.headers import Headers
from flotilla.pipeline import ATTEMPT_LAYERS, Handler, build_stack
from flotilla.registry import Health, Instance, MemoryRegistry
from flotilla.request import Attempt, Request
from flotilla.resilience.policy import Policy, uniform
from flotilla.resilience.signals import SignalKind, Signals


def inst(id: str, port: int, service: str = "svc") -> Instance:
    return Instance(id=id, service=service, address=f"127.0.0.1:{port}", health=Health.HEALTHY)


class First:
    """Always the first endpoint offered: would pick a failed one again if it were offered."""

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        return endpoints[0]


class StubDirectory:
    """A directory with fixed sets; ``open`` counts how often it is asked."""

    def __init__(self, sets: dict[str, EndpointSet], known: Sequence[str] = ()) -> None:
        self.sets = sets
        self.known = list(known)
        self.opened: list[str] = []

    def get(self, service: str) -> EndpointSet | None:
        return None

    async def open(self, service: str, *, deadline: float | None = None) -> EndpointSet:
        self.opened.append(service)
        return self.sets.setdefault(service, EndpointSet(service))

    async def known_services(self) -> list[str]:
        return self.known


AttemptHandler = Callable[[Attempt], Awaitable[msgspec.Raw]]


def never_twice(send: AttemptHandler) -> AttemptHandler:
    """``send``, failing the test at once if a request comes to one endpoint twice (rather
    than letting a balancer that offers a refused endpoint again spin forever)."""
    sent: list[tuple[Request, str]] = []

    async def guarded(attempt: Attempt) -> msgspec.Raw:
        pair = (attempt.request, attempt.endpoint.id)
        if any(request is pair[0] and endpoint == pair[1] for request, endpoint in sent):
            raise AssertionError(f"{attempt} went to an endpoint it was sent to before")
        sent.append(pair)
        return await send(attempt)

    return guarded


def setup(
    n: int, send: AttemptHandler, strategy: Any = None, *, panic_threshold: float = 0.5
) -> tuple[Balance, EndpointSet]:
    endpoints = EndpointSet("svc")
    endpoints.update([inst(f"e{i}", 9000 + i) for i in range(n)])
    directory: Any = StubDirectory({"svc": endpoints})
    policies = uniform(Policy(panic_threshold=panic_threshold))
    balance = Balance(directory, never_twice(send), strategy or First(), policies=policies)
    return balance, endpoints


def request(service: str = "svc") -> Request:
    return Request(service, "m", {}, Headers(request_id="r"))


def response(value: Any) -> msgspec.Raw:
    return msgspec.Raw(codec.encode(value))


def inflight(endpoints: EndpointSet) -> list[int]:
    return [e.inflight for e in endpoints.endpoints.values()]


async def answer_with_endpoint(attempt: Attempt) -> msgspec.Raw:
    return response(attempt.endpoint.id)


async def test_no_endpoint_is_unavailable_naming_the_service() -> None:
    async def never(attempt: Attempt) -> msgspec.Raw:
        raise AssertionError("nothing to call")

    balance, _ = setup(0, never)
    with pytest.raises(Unavailable, match="'catalog'") as caught:
        await balance(request("catalog"))
    assert caught.value.never_sent


async def test_sends_one_attempt_to_the_pick_and_returns_its_payload() -> None:
    seen: list[Attempt] = []

    async def send(attempt: Attempt) -> msgspec.Raw:
        seen.append(attempt)
        return response("ok")

    balance, endpoints = setup(2, send)
    req = request()
    assert codec.decode(await balance(req)) == "ok"
    (attempt,) = seen
    assert attempt.request is req
    assert attempt.endpoint is endpoints.endpoints["e0"]
    assert attempt.number == 1


NEVER_SENT: list[Callable[[], FlotillaError]] = [
    lambda: ConnectFailed("refused"),
    lambda: HandshakeFailed("wrong secret", details={"reason": "unauthenticated"}),
    lambda: ResourceExhausted("not reading our calls", never_sent=True),
    lambda: Unavailable("breaker open", never_sent=True),
]
NEVER_SENT_IDS = ["connect-failed", "handshake-failed", "paused-connection", "unavailable-unsent"]


@pytest.mark.parametrize("make", NEVER_SENT, ids=NEVER_SENT_IDS)
async def test_a_never_sent_failure_is_requeued_to_another_endpoint(
    make: Callable[[], FlotillaError],
) -> None:
    tried: list[str] = []

    async def send(attempt: Attempt) -> msgspec.Raw:
        tried.append(attempt.endpoint.id)
        if attempt.endpoint.id == "e0":
            raise make()
        return response(attempt.endpoint.id)

    balance, endpoints = setup(3, send)
    assert codec.decode(await balance(request())) == "e1"
    assert tried == ["e0", "e1"]
    assert inflight(endpoints) == [0, 0, 0]


async def test_a_layer_that_refuses_unsent_is_requeued_like_the_transport() -> None:
    # A breaker (or any attempt-tier layer) refusing an endpoint before the
    # call leaves: balancing sends the request elsewhere, the layer need not
    # know about balancing.
    refused: list[str] = []

    async def refuse_e0(attempt: Attempt, call_next: Handler[Attempt]) -> msgspec.Raw:
        if attempt.endpoint.id == "e0":
            refused.append(attempt.endpoint.id)
            raise Unavailable("circuit open for e0", never_sent=True)
        response: msgspec.Raw = await call_next(attempt)
        return response

    stack = build_stack({"breaker": refuse_e0}, answer_with_endpoint, ATTEMPT_LAYERS)
    balance, _ = setup(2, stack)
    assert codec.decode(await balance(request())) == "e1"
    assert refused == ["e0"]


async def test_requeues_try_every_endpoint_once_with_no_cap() -> None:
    # Nothing was sent, so trying all of them is safe; a cap would fail calls
    # that the last healthy replica could have served.
    tried: list[str] = []
    numbers: list[int] = []

    async def send(attempt: Attempt) -> msgspec.Raw:
        tried.append(attempt.endpoint.id)
        numbers.append(attempt.number)
        if attempt.endpoint.id != "e7":
            raise ConnectFailed("refused")
        return response("last one")

    balance, endpoints = setup(8, send)  # First: would pick a refused one again if offered
    assert codec.decode(await balance(request())) == "last one"
    assert tried == [f"e{i}" for i in range(8)]  # each once, the last one included
    assert numbers == list(range(1, 9))
    assert inflight(endpoints) == [0] * 8


@pytest.mark.parametrize("make", NEVER_SENT, ids=NEVER_SENT_IDS)
async def test_every_endpoint_refusing_unsent_fails_as_unavailable_naming_the_service(
    make: Callable[[], FlotillaError],
) -> None:
    tried: list[str] = []

    async def refuse(attempt: Attempt) -> msgspec.Raw:
        tried.append(attempt.endpoint.id)
        raise make()

    balance, endpoints = setup(6, refuse, "random")
    with pytest.raises(Unavailable, match="'svc'") as caught:
        await balance(request())
    assert type(caught.value) is Unavailable
    assert caught.value.never_sent  # the caller above may still go elsewhere
    assert "6 tried" in caught.value.message
    assert sorted(tried) == [f"e{i}" for i in range(6)]
    assert inflight(endpoints) == [0] * 6


@pytest.mark.parametrize(
    "make",
    [
        lambda: Unavailable("connection lost", retryable=False),
        lambda: ResourceExhausted("callee is full"),
        lambda: Internal("boom"),
    ],
    ids=["lost-after-sending", "refused-by-callee", "internal"],
)
async def test_a_failure_that_was_sent_is_not_requeued(make: Callable[[], FlotillaError]) -> None:
    tried: list[str] = []
    error = make()

    async def fail(attempt: Attempt) -> msgspec.Raw:
        tried.append(attempt.endpoint.id)
        raise error  # the callee may have run it: not balancing's to repeat

    balance, endpoints = setup(3, fail)
    with pytest.raises(type(error)) as caught:
        await balance(request())
    assert caught.value is error
    assert tried == ["e0"]
    assert inflight(endpoints) == [0, 0, 0]


async def test_inflight_counts_during_and_returns_to_zero() -> None:
    during: list[int] = []

    async def ok(attempt: Attempt) -> msgspec.Raw:
        during.append(attempt.endpoint.inflight)
        if len(during) > 1:
            raise Internal("boom")
        return response("ok")

    balance, endpoints = setup(1, ok)
    await balance(request())
    assert during == [1]
    assert inflight(endpoints) == [0]
    with pytest.raises(Internal):
        await balance(request())
    assert during == [1, 1]
    assert inflight(endpoints) == [0]


async def test_inflight_returns_to_zero_on_cancellation() -> None:
    started = asyncio.Event()

    async def hang(attempt: Attempt) -> msgspec.Raw:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("never answers")

    balance, endpoints = setup(1, hang)
    task = asyncio.create_task(balance(request()))
    await started.wait()
    assert inflight(endpoints) == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inflight(endpoints) == [0]


async def slow_answer(attempt: Attempt) -> msgspec.Raw:
    await asyncio.sleep(0.02)
    return response("ok")


async def test_latency_is_recorded() -> None:
    balance, endpoints = setup(1, slow_answer)
    await balance(request())
    assert endpoints.endpoints["e0"].latency() >= 0.015


@pytest.mark.parametrize("error", [Unavailable, Internal, DeadlineExceeded, ResourceExhausted])
async def test_a_fast_sent_failure_costs_the_endpoint_latency(
    error: type[FlotillaError],
) -> None:
    # A replica that fails fast must not look fast to the strategy.
    answers: list[AttemptHandler] = [slow_answer]

    async def send(attempt: Attempt) -> msgspec.Raw:
        return await answers[-1](attempt)

    async def fail(attempt: Attempt) -> msgspec.Raw:
        raise error("boom")

    balance, endpoints = setup(1, send)
    endpoint = endpoints.endpoints["e0"]
    await balance(request())
    before = endpoint.latency()
    assert before >= 0.015
    answers.append(fail)
    with pytest.raises(error):
        await balance(request())
    # Twice the average (less what it decayed in the milliseconds since it was read).
    assert endpoint.latency() >= 2 * before * 0.99
    assert inflight(endpoints) == [0]


async def test_load_moves_away_from_an_endpoint_that_shed_a_call() -> None:
    # The callee's bulkhead refused at once: a fast answer, but no sign of a
    # fast endpoint.  P2C over two endpoints compares both on every pick.
    picked: list[str] = []

    async def send(attempt: Attempt) -> msgspec.Raw:
        picked.append(attempt.endpoint.id)
        if attempt.endpoint.id == "e0":
            raise ResourceExhausted("svc.m is at its limit")
        return response("ok")

    balance, _ = setup(2, send, "p2c")
    for _ in range(12):
        with contextlib.suppress(ResourceExhausted):
            await balance(request())
    assert picked.count("e0") == 1  # shed once, then left alone
    assert picked[picked.index("e0") + 1 :] == ["e1"] * (11 - picked.index("e0"))


async def test_a_sent_failure_never_makes_a_fresh_endpoint_look_cheaper() -> None:
    async def fail(attempt: Attempt) -> msgspec.Raw:
        raise Unavailable("connection lost", retryable=False)

    balance, endpoints = setup(1, fail)
    endpoint = endpoints.endpoints["e0"]
    before = endpoint.cost()
    for _ in range(3):
        with pytest.raises(Unavailable):
            await balance(request())
        after = endpoint.cost()
        assert after > before
        before = after


@pytest.mark.parametrize("make", NEVER_SENT, ids=NEVER_SENT_IDS)
async def test_a_never_sent_failure_records_no_latency(make: Callable[[], FlotillaError]) -> None:
    async def send(attempt: Attempt) -> msgspec.Raw:
        if attempt.endpoint.id == "e0":
            raise make()
        return response("ok")

    balance, endpoints = setup(2, send)
    refused = endpoints.endpoints["e0"]
    before = refused.latency()
    await balance(request())
    assert refused.latency() <= before  # no sample: only decay


async def test_a_fast_not_found_is_recorded_as_its_real_time() -> None:
    # Not found is a good answer about the request, not a fault of the endpoint.
    answers: list[AttemptHandler] = [slow_answer]

    async def send(attempt: Attempt) -> msgspec.Raw:
        return await answers[-1](attempt)

    async def missing(attempt: Attempt) -> msgspec.Raw:
        raise NotFound("no such thing")

    balance, endpoints = setup(1, send)
    endpoint = endpoints.endpoints["e0"]
    await balance(request())
    before = endpoint.latency()
    answers.append(missing)
    with pytest.raises(NotFound):
        await balance(request())
    assert endpoint.latency() <= before  # a fast sample pulls the average down, if anything
    assert inflight(endpoints) == [0]


def last_sample_estimate(endpoint: Endpoint) -> float:
    """The latency estimate as its last sample left it (a ``now`` before it: no decay)."""
    return endpoint.latency(now=0.0)


async def test_connect_time_is_left_out_of_the_endpoints_latency() -> None:
    # The transport spent 0.3 s opening the connection, then the call itself
    # took a moment: only the call is the endpoint's latency.  Bounds are what
    # the handler measured: a busy machine stretches both parts, not the rule.
    took: dict[str, float] = {}

    async def connect_then_answer(attempt: Attempt) -> msgspec.Raw:
        started = time.monotonic()
        await asyncio.sleep(0.3)
        attempt.connect_seconds = took["connect"] = time.monotonic() - started
        await asyncio.sleep(0.02)
        took["call"] = time.monotonic() - started - took["connect"]
        return response("ok")

    balance, endpoints = setup(1, connect_then_answer)
    await balance(request())
    latency = last_sample_estimate(endpoints.endpoints["e0"])
    assert took["call"] <= latency < took["call"] + took["connect"]


async def test_the_connect_time_of_a_requeued_attempt_is_not_charged_to_the_next() -> None:
    # The first pick connected (taking time) and then failed before sending;
    # the second answers on an open connection: its latency is its own, and
    # no connect time noted on the first try is subtracted from it.
    took: dict[str, float] = {}

    async def send(attempt: Attempt) -> msgspec.Raw:
        assert attempt.connect_seconds == 0.0
        started = time.monotonic()
        if attempt.endpoint.id == "e0":
            await asyncio.sleep(0.3)
            attempt.connect_seconds = took["e0"] = time.monotonic() - started
            raise ConnectFailed("closed before the call went out")
        await asyncio.sleep(0.02)
        took["e1"] = time.monotonic() - started
        return response("ok")

    balance, endpoints = setup(2, send)
    assert codec.decode(await balance(request())) == "ok"
    latency = last_sample_estimate(endpoints.endpoints["e1"])
    assert took["e1"] <= latency < took["e1"] + took["e0"]  # its own time: not e0's


async def test_opens_the_service_on_first_use() -> None:
    balance, _ = setup(1, answer_with_endpoint)
    directory: Any = balance.directory
    await balance(request())
    assert directory.opened == ["svc"]


async def test_all_registered_but_ejected_names_the_reasons() -> None:
    async def never(attempt: Attempt) -> msgspec.Raw:
        raise AssertionError("nothing available")

    balance, endpoints = setup(2, never, panic_threshold=1.0)  # no panic
    e0, e1 = endpoints.endpoints.values()
    endpoints.eject(e0, until=time.monotonic() + 60, reason="breaker open")
    endpoints.mark_down(e1.address)
    with pytest.raises(Unavailable) as caught:
        await balance(request())
    message = caught.value.message
    assert "2 registered" in message
    assert "breaker open" in message
    assert "unreachable" in message


# -- panic --------------------------------------------------------------------------------------


def panic_setup(
    healths: list[Health], send: AttemptHandler
) -> tuple[Balance, EndpointSet, Signals]:
    endpoints = EndpointSet("svc")
    endpoints.update(
        [
            Instance(id=f"e{i}", service="svc", address=f"127.0.0.1:{9000 + i}", health=health)
            for i, health in enumerate(healths)
        ]
    )
    directory: Any = StubDirectory({"svc": endpoints})
    signals = Signals()
    balance = Balance(directory, never_twice(send), "round_robin", signals=signals)
    return balance, endpoints, signals


async def test_most_endpoints_out_balances_over_all_of_them_and_signals_once() -> None:
    unhealthy = Health.UNHEALTHY
    balance, endpoints, signals = panic_setup(
        [Health.HEALTHY, unhealthy, unhealthy], answer_with_endpoint
    )
    answered = {codec.decode(await balance(request())) for _ in range(6)}
    assert answered == {"e0", "e1", "e2"}  # 2 of 3 out: over the default 50 %
    panics = [s for s in signals.recent if s.kind == SignalKind.PANIC]
    assert len(panics) == 1
    assert panics[0].detail == {"registered": 3, "available": 1, "offered": 3}

    endpoints.update([inst("e0", 9000), inst("e1", 9001), endpoints.endpoints["e2"].instance])
    answered = {codec.decode(await balance(request())) for _ in range(6)}
    assert answered == {"e0", "e1"}  # 1 of 3 out: panic over
    endpoints.update([inst("e0", 9000), inst("e1", 9001)])
    endpoints.mark_down("127.0.0.1:9001")  # 1 of 2 out: exactly 50 %, not more
    assert {codec.decode(await balance(request())) for _ in range(4)} == {"e0"}
    endpoints.eject(endpoints.endpoints["e0"], time.monotonic() + 60, "breaker open")
    assert codec.decode(await balance(request())) == "e0"  # panic again, a second signal
    assert len([s for s in signals.recent if s.kind == SignalKind.PANIC]) == 2


async def test_panic_never_offers_an_endpoint_no_connection_reaches() -> None:
    balance, endpoints, _ = panic_setup([Health.HEALTHY] * 3, answer_with_endpoint)
    endpoints.mark_down("127.0.0.1:9000")
    endpoints.mark_down("127.0.0.1:9001")
    assert [e.id for e in endpoints.panic_list] == ["e2"]
    assert {codec.decode(await balance(request())) for _ in range(4)} == {"e2"}


async def test_every_breaker_refusing_in_panic_fails_at_once_saying_why() -> None:
    async def refuse(attempt: Attempt) -> msgspec.Raw:
        raise Unavailable("open", never_sent=True, details={"refusal": "breaker open"})

    balance, endpoints = setup(3, refuse)
    for endpoint in list(endpoints.endpoints.values())[:2]:
        endpoints.eject(endpoint, time.monotonic() + 60, "breaker open")
    with pytest.raises(Unavailable) as caught:
        await balance(request())
    assert "3 tried, none took it (breaker open: 3)" in caught.value.message


async def test_refusals_of_several_kinds_are_counted_by_kind() -> None:
    async def refuse(attempt: Attempt) -> msgspec.Raw:
        if attempt.endpoint.id == "e0":
            raise ConnectFailed("connection refused")
        raise Unavailable("open", never_sent=True, details={"refusal": "breaker open"})

    balance, _ = setup(3, refuse)
    with pytest.raises(Unavailable) as caught:
        await balance(request())
    assert "(unreachable: 1, breaker open: 2)" in caught.value.message
    assert caught.value.details == {"refusals": {"unreachable": 1, "breaker open": 2}}


def test_a_bad_strategy_name_fails_when_built() -> None:
    directory: Any = StubDirectory({})
    with pytest.raises(ConfigError, match="no_such"):
        Balance(directory, answer_with_endpoint, "no_such")
    with pytest.raises(ConfigError, match="consistent_hash"):
        Balance(directory, answer_with_endpoint, "p2c", {"carts": "consistent_hash"})


async def test_each_service_gets_its_own_strategy() -> None:
    directory: Any = StubDirectory({})
    balance = Balance(directory, answer_with_endpoint, "round_robin", {"carts": First()})
    assert type(balance.strategy("catalog")).__name__ == "RoundRobin"
    assert balance.strategy("catalog") is balance.strategy("catalog")
    assert balance.strategy("catalog") is not balance.strategy("orders")  # state not shared
    assert isinstance(balance.strategy("carts"), First)


# -- against a real registry ------------------------------------------------------------------


@pytest.fixture
async def registry() -> AsyncIterator[MemoryRegistry]:
    registry = MemoryRegistry()
    yield registry
    await registry.aclose()


async def test_an_unknown_service_suggests_a_close_name(registry: MemoryRegistry) -> None:
    lease = await registry.grant(30)
    await registry.register(inst("s1", 9001, "shop"), lease=lease)
    await registry.register(inst("c1", 9002, "catalog"), lease=lease)
    directory = Directory(registry)
    balance = Balance(directory, answer_with_endpoint, First())
    try:
        with pytest.raises(Unavailable) as caught:
            await balance(request("shpo"))
        message = caught.value.message
        assert "'shpo'" in message
        assert "did you mean 'shop'?" in message
        assert "catalog, shop" in message  # what there is, to choose from
        with pytest.raises(Unavailable) as caught:
            await balance(request("zzz"))
        assert "did you mean" not in caught.value.message
        assert "catalog, shop" in caught.value.message
    finally:
        await directory.aclose()


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
    balance = Balance(directory, answer_with_endpoint, First())
    try:
        first = asyncio.create_task(balance(request()))
        await asyncio.sleep(0)
        second = asyncio.create_task(balance(request()))
        await asyncio.sleep(0.01)
        assert not first.done()
        assert not second.done()
        registry.release.set()
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert [codec.decode(r) for r in results if isinstance(r, msgspec.Raw)] == ["e0", "e0"]
    finally:
        await directory.aclose()


def unguarded(n: int, send: AttemptHandler) -> Balance:
    """Like ``setup``, without the guard: these requests go back to an endpoint on purpose."""
    endpoints = EndpointSet("svc")
    endpoints.update([inst(f"e{i}", 9000 + i) for i in range(n)])
    directory: Any = StubDirectory({"svc": endpoints})
    return Balance(directory, send, First())


async def test_a_retry_prefers_an_endpoint_its_request_was_not_sent_to() -> None:
    balance = unguarded(3, answer_with_endpoint)  # First: e0 unless told otherwise
    req = request()
    req.tried = set()  # what the hedger does before the first attempt
    assert codec.decode(await balance(req)) == "e0"
    assert codec.decode(await balance(req)) == "e1"
    assert codec.decode(await balance(req)) == "e2"
    assert req.tried == {"e0", "e1", "e2"}
    # Every endpoint tried: any may be chosen again rather than none.
    assert codec.decode(await balance(req)) == "e0"


async def test_a_sent_failure_starts_the_set_of_tried_endpoints() -> None:
    async def fail_on_e0(attempt: Attempt) -> msgspec.Raw:
        if attempt.endpoint.id == "e0":
            raise Unavailable("down")
        return response(attempt.endpoint.id)

    balance = unguarded(2, fail_on_e0)
    req = request()
    with pytest.raises(Unavailable):
        await balance(req)
    assert req.tried == {"e0"}
    assert codec.decode(await balance(req)) == "e1"  # what the retry gets


async def test_an_answer_records_nothing() -> None:
    balance = unguarded(2, answer_with_endpoint)
    req = request()
    assert codec.decode(await balance(req)) == "e0"
    assert codec.decode(await balance(req)) == "e0"
    assert req.tried is None


async def test_an_endpoint_tried_before_is_still_skipped_by_a_requeue() -> None:
    # A never-sent refusal of the one untried endpoint: requeued to one tried before,
    # rather than failing while an endpoint is available.
    async def send(attempt: Attempt) -> msgspec.Raw:
        if attempt.endpoint.id == "e1":
            raise ConnectFailed("refused")
        return response(attempt.endpoint.id)

    balance, _ = setup(2, send)
    req = request()
    req.tried = {"e0"}
    assert codec.decode(await balance(req)) == "e0"
    assert req.tried == {"e0", "e1"}

"""The breaker layer: a breaker per endpoint, ejection while open, refusals balancing requeues."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest

from flotilla import NodeConfig, Service, Timings, codec, rpc
from flotilla.calls.balance import Balance
from flotilla.calls.endpoints import EndpointSet
from flotilla.errors import Internal, NotFound, Unavailable
from flotilla.headers import Headers
from flotilla.pipeline import build_stack
from flotilla.registry import Health, Instance
from flotilla.request import Attempt, Request
from flotilla.resilience.breakers import BREAKER_OPEN, Breakers
from flotilla.resilience.policy import BreakerPolicy, Policy, RetryPolicy, uniform
from flotilla.resilience.signals import SignalKind, Signals
from flotilla.testing import Cluster
from flotilla.testing.clock import FakeClock

BREAKER = BreakerPolicy(min_calls=2, failure_rate=0.5, open_base=5.0, jitter=0.0)


class OneSetDirectory:
    """The part of a Directory the breaker layer and balancing use, over fixed sets."""

    def __init__(self, *sets: EndpointSet) -> None:
        self.sets = {endpoint_set.service: endpoint_set for endpoint_set in sets}

    def get(self, service: str) -> EndpointSet | None:
        return self.sets.get(service)

    async def open(self, service: str, *, deadline: float | None = None) -> EndpointSet:
        return self.sets[service]

    async def known_services(self) -> list[str]:
        return sorted(self.sets)


def endpoint_set(n: int, service: str = "svc") -> EndpointSet:
    endpoints = EndpointSet(service)
    endpoints.update(
        [
            Instance(
                id=f"e{i}", service=service, address=f"127.0.0.1:{9000 + i}", health=Health.HEALTHY
            )
            for i in range(n)
        ]
    )
    return endpoints


def make(
    policy: BreakerPolicy = BREAKER,
) -> tuple[Breakers, FakeClock, Signals]:
    clock, signals = FakeClock(), Signals()
    breakers = Breakers(uniform(Policy(breaker=policy)), signals, clock, random_source=lambda: 0.5)
    return breakers, clock, signals


def attempt(endpoints: EndpointSet, endpoint: str, method: str = "m") -> Attempt:
    headers = Headers(request_id="r", deadline=time.monotonic() + 10)
    return Attempt(
        Request(endpoints.service, method, {}, headers), endpoints.endpoints[endpoint], 1
    )


def raw(value: Any) -> msgspec.Raw:
    return msgspec.Raw(codec.encode(value))


async def ok(attempt: Attempt) -> msgspec.Raw:
    return raw(attempt.endpoint.id)


async def fail(attempt: Attempt) -> msgspec.Raw:
    raise Internal("it broke")


def kinds(signals: Signals) -> list[str]:
    return [signal.kind for signal in signals.recent]


async def test_failures_open_the_breaker_and_eject_its_endpoint() -> None:
    breakers, _, signals = make()
    endpoints = endpoint_set(3)
    directory: Any = OneSetDirectory(endpoints)
    breakers.attach(directory)

    async def e0_fails(attempt: Attempt) -> msgspec.Raw:
        return await (fail if attempt.endpoint.id == "e0" else ok)(attempt)

    for _ in range(2):
        with pytest.raises(Internal):
            await breakers(attempt(endpoints, "e0"), e0_fails)
    before = time.monotonic()
    ejection = endpoints.ejected["e0"]
    assert ejection.reason == BREAKER_OPEN
    assert before + 4.5 < ejection.until <= before + 5.0  # the open time, in real time
    assert [e.id for e in endpoints.pick_list()] == ["e1", "e2"]
    assert kinds(signals) == [SignalKind.BREAKER_OPENED, SignalKind.EJECTED]
    opened = signals.recent[0]
    assert (opened.service, opened.endpoint, opened.method) == ("svc", "e0", None)
    assert opened.detail["failure_rate"] == 1.0
    assert opened.detail["open_seconds"] == 5.0

    with pytest.raises(Unavailable) as caught:  # balancing offered it anyway (panic, say)
        await breakers(attempt(endpoints, "e0"), ok)
    assert caught.value.never_sent
    assert caught.value.details == {"refusal": BREAKER_OPEN}
    assert "breaker of svc at 127.0.0.1:9000 is open (5.0s more)" in caught.value.message
    assert codec.decode(await breakers(attempt(endpoints, "e1"), ok)) == "e1"  # its own breaker


async def test_half_open_after_the_open_time_then_closed_by_probes() -> None:
    breakers, clock, signals = make(BreakerPolicy(min_calls=1, half_open_probes=2, jitter=0.0))
    endpoints = endpoint_set(1)
    with pytest.raises(Internal):
        await breakers(attempt(endpoints, "e0"), fail)
    await clock.advance(5.0)
    gate = asyncio.Event()

    async def slow_ok(attempt: Attempt) -> msgspec.Raw:
        await gate.wait()
        return raw("late")

    probes = [asyncio.create_task(breakers(attempt(endpoints, "e0"), slow_ok)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Unavailable, match="half-open and its probes are out"):
        await breakers(attempt(endpoints, "e0"), ok)
    gate.set()
    assert [codec.decode(await probe) for probe in probes] == ["late", "late"]
    assert kinds(signals) == [
        SignalKind.BREAKER_OPENED,
        SignalKind.BREAKER_HALF_OPEN,
        SignalKind.RESTORED,
        SignalKind.BREAKER_CLOSED,
    ]
    assert codec.decode(await breakers(attempt(endpoints, "e0"), ok)) == "e0"


async def test_half_open_puts_the_endpoint_back_for_its_probes() -> None:
    # The breaker's fake clock runs ahead of the directory's real one: the
    # ejection has not run out yet when the breaker goes half-open.
    breakers, clock, signals = make(BreakerPolicy(min_calls=1, half_open_probes=1, jitter=0.0))
    endpoints = endpoint_set(2)
    directory: Any = OneSetDirectory(endpoints)
    breakers.attach(directory)
    with pytest.raises(Internal):
        await breakers(attempt(endpoints, "e0"), fail)
    assert [e.id for e in endpoints.pick_list()] == ["e1"]
    await clock.advance(5.0)
    await breakers(attempt(endpoints, "e0"), ok)  # the probe (offered in panic, say)
    assert [e.id for e in endpoints.pick_list()] == ["e0", "e1"]
    assert kinds(signals)[-3:] == [
        SignalKind.BREAKER_HALF_OPEN,
        SignalKind.RESTORED,
        SignalKind.BREAKER_CLOSED,
    ]


async def test_application_answers_and_cancelled_calls_do_not_trip_it() -> None:
    # One call counted as a failure would trip this policy.
    breakers, _, signals = make(BreakerPolicy(min_calls=1, consecutive_failures=1, jitter=0.0))
    endpoints = endpoint_set(1)

    async def not_found(attempt: Attempt) -> msgspec.Raw:
        raise NotFound("no such item")

    async def hang(attempt: Attempt) -> msgspec.Raw:
        await asyncio.Event().wait()
        raise AssertionError("never")

    for _ in range(5):
        with pytest.raises(NotFound):
            await breakers(attempt(endpoints, "e0"), not_found)
    task = asyncio.create_task(breakers(attempt(endpoints, "e0"), hang))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(signals.recent) == []
    assert codec.decode(await breakers(attempt(endpoints, "e0"), ok)) == "e0"


async def test_every_breaker_open_gives_unavailable_at_once_saying_why() -> None:
    breakers, _, _ = make(BreakerPolicy(min_calls=1, jitter=0.0))
    endpoints = endpoint_set(3)
    directory: Any = OneSetDirectory(endpoints)
    breakers.attach(directory)
    sent: list[str] = []

    async def transmit(attempt: Attempt) -> msgspec.Raw:
        sent.append(attempt.endpoint.id)
        raise Internal("down")

    balance = Balance(directory, build_stack({"breaker": breakers}, transmit, ("breaker",)), "p2c")
    request = Request("svc", "m", {}, Headers(request_id="r"))
    for _ in range(3):
        with pytest.raises(Internal):
            await balance(request)
    assert sorted(sent) == ["e0", "e1", "e2"]  # each failed once, each breaker open
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await balance(request)
    assert time.monotonic() - started < 2.0  # at once: not waiting out the 5 s open time
    assert "3 tried, none took it (breaker open: 3)" in caught.value.message
    assert len(sent) == 3  # nothing more went out

    no_panic = Balance(
        directory,
        build_stack({"breaker": breakers}, transmit, ("breaker",)),
        "p2c",
        policies=uniform(Policy(panic_threshold=1.0)),
    )
    with pytest.raises(Unavailable, match="3 registered, all breaker open"):
        await no_panic(request)


async def test_per_method_breakers_leave_the_endpoint_to_its_other_methods() -> None:
    breakers, _, signals = make(BreakerPolicy(min_calls=1, per_method=True, jitter=0.0))
    endpoints = endpoint_set(1)
    directory: Any = OneSetDirectory(endpoints)
    breakers.attach(directory)
    with pytest.raises(Internal):
        await breakers(attempt(endpoints, "e0", "broken"), fail)
    with pytest.raises(Unavailable, match=r"breaker of svc\.broken at"):
        await breakers(attempt(endpoints, "e0", "broken"), ok)
    assert codec.decode(await breakers(attempt(endpoints, "e0", "fine"), ok)) == "e0"
    assert endpoints.ejected == {}
    assert kinds(signals) == [SignalKind.BREAKER_OPENED]
    assert signals.recent[0].method == "broken"


async def test_forced_open_refuses_and_ejects_once() -> None:
    breakers, _, signals = make(BreakerPolicy(state="forced_open"))
    endpoints = endpoint_set(2)
    directory: Any = OneSetDirectory(endpoints)
    breakers.attach(directory)
    for _ in range(2):
        with pytest.raises(Unavailable, match="forced open by its policy"):
            await breakers(attempt(endpoints, "e0"), ok)
    assert endpoints.ejected["e0"].reason == "breaker forced open"
    assert kinds(signals) == [SignalKind.EJECTED]


async def test_a_calls_own_policy_takes_precedence() -> None:
    breakers, _, _ = make()
    endpoints = endpoint_set(1)
    forced = attempt(endpoints, "e0")
    forced.request.policy = Policy(breaker=BreakerPolicy(state="forced_open"))
    with pytest.raises(Unavailable):
        await breakers(forced, ok)
    assert codec.decode(await breakers(attempt(endpoints, "e0"), ok)) == "e0"


async def test_disabled_admits_everything_and_records_nothing() -> None:
    breakers, _, signals = make(BreakerPolicy(state="disabled", min_calls=1))
    endpoints = endpoint_set(1)
    for _ in range(3):
        with pytest.raises(Internal):
            await breakers(attempt(endpoints, "e0"), fail)
    assert list(signals.recent) == []  # min_calls=1: one recorded failure would have opened it


async def test_breakers_of_endpoints_that_left_are_forgotten() -> None:
    breakers, _, _ = make(BreakerPolicy(min_calls=1, jitter=0.0))
    endpoints = endpoint_set(2)
    directory: Any = OneSetDirectory(endpoints)
    breakers.attach(directory)
    e0, e1 = (endpoints.endpoints[e].instance for e in ("e0", "e1"))
    with pytest.raises(Internal):
        await breakers(attempt(endpoints, "e0"), fail)  # e0's breaker opens
    endpoints.update([e1])  # e0 left the registry
    await breakers(attempt(endpoints, "e1"), ok)  # a new breaker: the time to forget e0's
    endpoints.update([e0, e1])  # e0 is back, with a fresh (closed) breaker
    assert codec.decode(await breakers(attempt(endpoints, "e0"), ok)) == "e0"


async def test_metrics_only_signals_but_neither_refuses_nor_ejects() -> None:
    breakers, _, signals = make(BreakerPolicy(state="metrics_only", min_calls=1, jitter=0.0))
    endpoints = endpoint_set(2)
    directory: Any = OneSetDirectory(endpoints)
    breakers.attach(directory)
    with pytest.raises(Internal):
        await breakers(attempt(endpoints, "e0"), fail)
    assert codec.decode(await breakers(attempt(endpoints, "e0"), ok)) == "e0"
    assert endpoints.ejected == {}
    assert kinds(signals) == [SignalKind.BREAKER_OPENED]


# -- through real nodes --------------------------------------------------------------------------


class Flaky(Service, name="flaky"):
    def __init__(self, failing: bool, served: list[str]) -> None:
        self.failing = failing
        self.served = served

    @rpc
    async def work(self) -> str:
        self.served.append("bad" if self.failing else "good")
        if self.failing:
            raise Internal("this replica is broken")
        return "done"


async def test_through_a_cluster_traffic_leaves_a_replica_that_answers_errors() -> None:
    # Default thresholds (50 % of at least 5 calls): the bad replica's breaker
    # opens after its fifth call, and it is ejected from the caller's view.
    signals = Signals()
    served: list[str] = []
    replicas = iter([True, False])

    async with Cluster(
        NodeConfig(strategy="round_robin", timings=Timings(grace=0.0, drain=2.0)),
        layers=lambda: {"breaker": Breakers(uniform(), signals)},
    ) as cluster:
        await cluster.add(lambda: Flaky(next(replicas), served), replicas=2)
        failures = 0
        for _ in range(40):
            try:
                await cluster.call("flaky.work")
            except Internal:
                failures += 1
        assert failures == 5
        assert served.count("bad") == 5
        assert served[-20:] == ["good"] * 20  # round robin, but the bad one is out
        endpoints = cluster.client_node.caller.directory.get("flaky")
        assert endpoints is not None
        assert [e.reason for e in endpoints.ejected.values()] == [BREAKER_OPEN]
        assert SignalKind.EJECTED in kinds(signals)


class Down(Service, name="down"):
    @rpc
    async def get(self) -> None:
        raise Unavailable("down for the test")


async def opened_for(seed: int) -> float:
    """How long the client's breaker toward ``down`` opens after one failure, under ``seed``."""
    policy = Policy(breaker=BreakerPolicy(min_calls=1), retry=RetryPolicy(max_attempts=1))
    async with Cluster(clock=FakeClock(), policies=uniform(policy), seed=seed) as cluster:
        await cluster.add(Down())
        with pytest.raises(Unavailable):
            await cluster.call("down.get")
        (opened,) = [
            s for s in cluster.client_node.signals.recent if s.kind == SignalKind.BREAKER_OPENED
        ]
        return float(opened.detail["open_seconds"])


async def test_a_seeded_cluster_opens_its_breakers_for_the_same_jittered_time() -> None:
    # The jitter is the node's seeded randomness, not the process-wide generator.
    first, second = await opened_for(11), await opened_for(11)
    assert first == second
    assert 4.0 <= first <= 6.0  # open_base 5 s, +-20 %

"""Fault injection: delay, error or abort a fraction of calls, set by policy or at run time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest

from flotilla import Service, codec, rpc
from flotilla.errors import (
    ConfigError,
    ConnectionCut,
    DeadlineExceeded,
    Internal,
    NotFound,
    Unavailable,
)
from flotilla.headers import Headers
from flotilla.resilience.faults import Faults
from flotilla.resilience.policy import (
    BreakerPolicy,
    FaultPolicy,
    Policy,
    PolicyLookup,
    RetryPolicy,
    uniform,
)
from flotilla.resilience.signals import SignalKind, Signals
from flotilla.runtime.dispatcher import Dispatcher
from flotilla.testing import Cluster, FakeClock, wait_for


class Echo(Service, name="echo"):
    def __init__(self) -> None:
        self.ran = 0

    @rpc
    async def say(self, word: str = "hi") -> str:
        self.ran += 1
        return word

    @rpc
    async def other(self) -> str:
        self.ran += 1
        return "other"


class NoInvoker:
    async def invoke(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no onward calls here")

    def client(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no onward calls here")


class NoDraws(random.Random):
    """Fails the test if a draw is made."""

    def random(self) -> float:
        raise AssertionError("no draw expected")


class Setup:
    def __init__(
        self,
        policies: PolicyLookup | None = None,
        *,
        rng: random.Random | None = None,
        clock: FakeClock | None = None,
    ) -> None:
        self.echo = Echo()
        self.signals = Signals()
        self.faults = Faults(policies, self.signals, clock=clock, random=rng)
        self.dispatcher = Dispatcher([self.echo], NoInvoker(), {"faults": self.faults})

    def call(self, method: str = "say") -> Awaitable[bytes]:
        return self.dispatcher(f"echo.{method}", msgspec.Raw(codec.encode({})), Headers())


def configured(**faults: Any) -> PolicyLookup:
    return uniform(Policy(faults=FaultPolicy(**faults)))


async def test_no_faults_configured_runs_the_method_and_draws_nothing() -> None:
    setup = Setup(rng=NoDraws())
    assert codec.decode(await setup.call()) == "hi"
    assert setup.echo.ran == 1
    assert not setup.signals.recent


async def test_every_call_fails_with_the_configured_code_at_one_hundred_percent() -> None:
    setup = Setup(configured(error="not_found", error_fraction=1.0), rng=NoDraws())
    for _ in range(3):
        with pytest.raises(NotFound, match=r"fault injected into echo\.say"):
            await setup.call()
    assert setup.echo.ran == 0
    kinds = [(s.kind, s.service, s.method, s.detail["fault"]) for s in setup.signals.recent]
    assert kinds == [(SignalKind.FAULT, "echo", "say", "error")] * 3


async def test_a_delay_waits_on_the_clock_then_runs_the_method() -> None:
    clock = FakeClock()
    setup = Setup(configured(delay=0.5, delay_fraction=1.0), clock=clock)
    call = asyncio.ensure_future(setup.call())
    await wait_for(lambda: bool(setup.signals.recent))
    await clock.advance(0.49)
    assert not call.done()
    assert setup.echo.ran == 0
    await clock.advance(0.01)
    assert codec.decode(await call) == "hi"
    assert setup.signals.recent[0].detail == {"fault": "delay", "seconds": 0.5}


async def test_an_abort_asks_the_server_to_cut_the_connection() -> None:
    setup = Setup(configured(abort_fraction=1.0))
    with pytest.raises(ConnectionCut):
        await setup.call()
    assert setup.echo.ran == 0


async def test_a_seeded_fraction_is_reproducible_draw_by_draw() -> None:
    setup = Setup(configured(error="internal", error_fraction=0.3), rng=random.Random(7))
    outcomes = []
    for _ in range(200):
        try:
            await setup.call()
            outcomes.append(True)
        except Internal:
            outcomes.append(False)
    replay = random.Random(7)
    assert outcomes == [replay.random() >= 0.3 for _ in range(200)]
    assert 40 <= outcomes.count(False) <= 80  # about 30 %


async def test_faults_set_at_run_time_win_the_method_over_the_service_and_clear() -> None:
    setup = Setup(configured(error="not_found", error_fraction=1.0))
    setup.faults.set("echo", None, FaultPolicy(error="unavailable", error_fraction=1.0))
    setup.faults.set("echo", "other", FaultPolicy())  # this method: no faults
    with pytest.raises(Unavailable):
        await setup.call("say")
    assert codec.decode(await setup.call("other")) == "other"
    setup.faults.clear("echo", "other")
    with pytest.raises(Unavailable):
        await setup.call("other")
    setup.faults.clear()
    with pytest.raises(NotFound):  # back to the configured policy
        await setup.call("say")


def test_an_unknown_error_code_is_refused_when_the_policy_is_made() -> None:
    with pytest.raises(ConfigError, match="'teapot' is not an error code"):
        FaultPolicy(error="teapot", error_fraction=1.0)


def test_a_fraction_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="abort_fraction must be between 0 and 1"):
        FaultPolicy(abort_fraction=1.5)


# -- through a real cluster --------------------------------------------------------------------

# Each call is one attempt, and no breaker steps in: the counts are the faults alone.
NO_RETRIES = uniform(
    Policy(retry=RetryPolicy(max_attempts=1), breaker=BreakerPolicy(state="disabled"))
)


async def outcomes(cluster: Cluster, calls: int) -> list[str]:
    """What each of ``calls`` sequential calls gave: the answer or the error's code."""
    seen = []
    for _ in range(calls):
        try:
            seen.append(await cluster.call("echo.say", word="ok"))
        except Unavailable as exc:
            seen.append(exc.code)
    return seen


@pytest.mark.parametrize(("fraction", "failures"), [(1.0, 20), (0.0, 0)])
async def test_all_or_none_of_the_calls_fail_through_a_cluster(
    fraction: float, failures: int
) -> None:
    async with Cluster(policies=NO_RETRIES) as cluster:
        await cluster.add(Echo())
        cluster.inject("echo.say", FaultPolicy(error="unavailable", error_fraction=fraction))
        seen = await outcomes(cluster, 20)
        assert seen.count("unavailable") == failures
        assert seen.count("ok") == 20 - failures


async def test_a_seeded_thirty_percent_fails_the_same_calls_in_every_run() -> None:
    runs = []
    for _ in range(2):
        async with Cluster(policies=NO_RETRIES, seed=42) as cluster:
            await cluster.add(Echo())
            cluster.inject("echo", FaultPolicy(error="unavailable", error_fraction=0.3))
            runs.append(await outcomes(cluster, 60))
    assert runs[0] == runs[1]
    assert 8 <= runs[0].count("unavailable") <= 30  # about 18


async def test_one_replica_made_to_fail_while_the_other_serves() -> None:
    async with Cluster(policies=NO_RETRIES) as cluster:
        bad, good = await cluster.add(Echo, replicas=2)
        cluster.inject("echo.say", FaultPolicy(error="internal", error_fraction=1.0), node=bad)
        signals: list[str] = []
        bad.signals.listen(lambda signal: signals.append(signal.kind))
        answers = 0
        for _ in range(30):
            try:
                await cluster.call("echo.say", word="ok")
                answers += 1
            except Internal:
                pass
        assert 0 < answers < 30
        assert signals == [SignalKind.FAULT] * (30 - answers)
        assert not [s for s in good.signals.recent if s.kind == SignalKind.FAULT]
        cluster.clear_faults()
        assert await outcomes(cluster, 5) == ["ok"] * 5


async def test_an_abort_cuts_the_connection_and_the_caller_sees_it_lost() -> None:
    async with Cluster(policies=NO_RETRIES) as cluster:
        (node,) = await cluster.add(Echo())
        cluster.inject("echo.say", FaultPolicy(abort_fraction=1.0))
        with pytest.raises(Unavailable, match="lost") as caught:
            await cluster.call("echo.say")
        assert not caught.value.retryable  # it went out: maybe it ran
        assert [s.detail["fault"] for s in node.signals.recent] == ["abort"]


async def test_an_injected_delay_runs_into_the_callers_deadline() -> None:
    async with Cluster(policies=NO_RETRIES) as cluster:
        await cluster.add(Echo())
        cluster.inject("echo", FaultPolicy(delay=5.0, delay_fraction=1.0))
        with pytest.raises(DeadlineExceeded):
            await cluster.context(timeout=0.1).call("echo.say")


def test_injecting_into_a_service_no_node_hosts_says_so() -> None:
    cluster = Cluster()
    with pytest.raises(ValueError, match="no node of this cluster hosts service 'nope'"):
        cluster.inject("nope", FaultPolicy(error_fraction=1.0))


async def test_injecting_into_an_unknown_method_names_the_methods() -> None:
    async with Cluster() as cluster:
        (node,) = await cluster.add(Echo())
        with pytest.raises(ValueError, match=r"no method 'shout' \(its methods: other, say\)"):
            cluster.inject("echo.shout", FaultPolicy(error_fraction=1.0))
        with pytest.raises(ValueError, match="does not host service 'other'"):
            cluster.inject("other", FaultPolicy(error_fraction=1.0), node=node)


async def test_a_nodes_own_faults_layer_is_the_one_it_switches() -> None:
    mine = Faults()
    async with Cluster(server_layers=lambda: {"faults": mine}) as cluster:
        (node,) = await cluster.add(Echo())
        assert node.faults is mine
        cluster.inject("echo", FaultPolicy(error="not_found", error_fraction=1.0))
        with pytest.raises(NotFound):
            await cluster.call("echo.say")

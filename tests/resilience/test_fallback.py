"""Fallbacks: a declared answer when a call fails for good, and both causes when it fails too."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from flotilla import Context, Service, codec, rpc
from flotilla.errors import (
    ConfigError,
    DeadlineExceeded,
    FlotillaError,
    NotFound,
    Unavailable,
)
from flotilla.headers import Headers
from flotilla.pipeline import Handler, build_stack
from flotilla.request import Request
from flotilla.resilience.breakers import Breakers
from flotilla.resilience.fallback import Fallbacks, fallback
from flotilla.resilience.policy import BreakerPolicy, Policy, RetryPolicy, uniform
from flotilla.resilience.signals import SignalKind, Signals
from flotilla.testing import Cluster


def request(target: str = "catalog.get", caller: str = "", **args: Any) -> Request:
    service, _, method = target.partition(".")
    return Request(service, method, args, Headers(request_id="r", caller=caller))


def failing(error: FlotillaError) -> Handler[Request]:
    async def send(request: Request) -> msgspec.Raw:
        raise error

    return send


async def answer(request: Request) -> msgspec.Raw:
    return msgspec.Raw(codec.encode("fresh"))


class Front(Service, name="front"):
    @rpc
    async def show(self, ctx: Context, id: int) -> str:
        result: str = await ctx.call("catalog.get", id=id)
        return result

    def __init__(self) -> None:
        self.errors: list[FlotillaError] = []

    @fallback("catalog.get")
    async def cached(self, error: FlotillaError, id: int) -> str:
        self.errors.append(error)
        return f"cached {id} ({error.code})"

    @fallback("catalog.list", on=(Unavailable, DeadlineExceeded))
    async def broken(self, error: FlotillaError) -> str:
        raise RuntimeError("the cache is gone too")


async def test_a_declared_fallback_answers_an_unavailable_call() -> None:
    signals = Signals()
    layer = Fallbacks.of_services([Front()], signals=signals)
    stack = build_stack({"fallback": layer}, failing(Unavailable("all down")))
    raw = await stack(request(caller="front", id=7))
    assert codec.decode(raw) == "cached 7 (unavailable)"
    (signal,) = signals.recent
    assert (signal.kind, signal.service, signal.method) == (SignalKind.FALLBACK, "catalog", "get")
    assert signal.detail == {"caller": "front", "error": "unavailable", "outcome": "answered"}


async def test_it_runs_only_for_its_caller_its_target_and_its_errors() -> None:
    stack = build_stack({"fallback": Fallbacks.of_services([Front()])}, failing(NotFound("no 7")))
    with pytest.raises(NotFound):  # an answer of the application: no fallback
        await stack(request(caller="front", id=7))
    down = build_stack({"fallback": Fallbacks.of_services([Front()])}, failing(Unavailable("x")))
    with pytest.raises(Unavailable):  # another service's call
        await down(request(caller="orders", id=7))
    with pytest.raises(Unavailable):  # another target
        await down(request("catalog.put", caller="front", id=7))
    ok = build_stack({"fallback": Fallbacks.of_services([Front()])}, answer)
    assert codec.decode(await ok(request(caller="front", id=7))) == "fresh"


async def test_a_fallback_that_raises_reports_both_causes() -> None:
    signals = Signals()
    layer = Fallbacks.of_services([Front()], signals=signals)
    stack = build_stack({"fallback": layer}, failing(DeadlineExceeded("too slow")))
    with pytest.raises(DeadlineExceeded) as caught:
        await stack(request("catalog.list", caller="front"))
    error = caught.value
    assert error.message == (
        "catalog.list failed (deadline_exceeded: too slow) and its fallback "
        "Front.broken raised RuntimeError: the cache is gone too"
    )
    assert error.details["fallback"] == "Front.broken"
    group = error.__cause__
    assert isinstance(group, ExceptionGroup)
    original, failure = group.exceptions
    assert isinstance(original, DeadlineExceeded)
    assert original.message == "too slow"
    assert isinstance(failure, RuntimeError)
    assert signals.recent[-1].detail["outcome"] == "raised"


async def test_a_fallback_answer_that_cannot_travel_is_both_causes_too() -> None:
    async def unencodable(error: FlotillaError) -> object:
        return object()

    stack = build_stack(
        {"fallback": Fallbacks({"catalog.get": unencodable})}, failing(Unavailable("down"))
    )
    with pytest.raises(Unavailable, match="returned a value that cannot be encoded"):
        await stack(request())


async def test_per_client_fallbacks_serve_any_caller() -> None:
    async def default(error: FlotillaError, id: int) -> dict[str, int]:
        return {"id": id}

    layer = Fallbacks({"catalog.get": default}, on=(Unavailable, NotFound))
    stack = build_stack({"fallback": layer}, failing(NotFound("gone")))
    assert codec.decode(await stack(request(id=3))) == {"id": 3}
    assert len(layer) == 1


def test_bad_declarations_are_refused_with_what_was_wrong() -> None:
    with pytest.raises(ConfigError, match=r"'catalog' is not 'service\.method'"):
        fallback("catalog")
    with pytest.raises(ConfigError, match="Flotilla error classes, not <class 'ValueError'>"):
        fallback("catalog.get", on=ValueError)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be `async def`"):

        @fallback("catalog.get")
        def sync(self: Any, error: FlotillaError) -> None: ...

    class Twice(Service, name="twice"):
        @fallback("catalog.get")
        async def one(self, error: FlotillaError) -> None: ...

        @fallback("catalog.get")
        async def two(self, error: FlotillaError) -> None: ...

    with pytest.raises(ConfigError, match=r"'twice' declares two fallbacks for catalog\.get"):
        Fallbacks.of_services([Twice()])


# -- through real nodes --------------------------------------------------------------------------


class Catalog(Service, name="catalog"):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @rpc
    async def get(self, id: int) -> str:
        self.calls.append("get")
        raise Unavailable("the catalog's database is down")


async def test_through_a_cluster_every_breaker_open_runs_the_fallback() -> None:
    # The catalog's two replicas fail; the front's breakers for both open, and
    # from then on its call is unavailable at once, sending nothing: the
    # fallback answers either way.
    signals = Signals()
    policies = uniform(
        Policy(
            breaker=BreakerPolicy(min_calls=1, open_base=30.0),
            retry=RetryPolicy(max_attempts=1),  # each call one try: the counts are the breakers'
        )
    )
    calls: list[str] = []
    front = Front()

    def layers() -> dict[str, Any]:
        return {"breaker": Breakers(policies, signals)}

    async with Cluster(layers=layers, policies=policies) as cluster:
        await cluster.add(lambda: Catalog(calls), replicas=2)
        await cluster.add(front)
        answers = [await cluster.call("front.show", id=5) for _ in range(4)]
        assert answers == ["cached 5 (unavailable)"] * 4
        assert len(calls) == 2  # one call opened each replica's breaker; then none went out
        opened = [s for s in signals.recent if s.kind == SignalKind.BREAKER_OPENED]
        assert {s.service for s in opened} == {"catalog"}
        assert len({s.endpoint for s in opened}) == 2
        assert "the catalog's database is down" in front.errors[0].message
        assert "2 tried, none took it (breaker open: 2)" in front.errors[-1].message

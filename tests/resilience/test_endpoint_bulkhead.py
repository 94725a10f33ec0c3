"""The caller's bulkhead: past ``per_endpoint`` calls in flight, an endpoint is skipped unsent."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from flotilla import Service, codec, rpc
from flotilla.balancing import Endpoint, RequestView
from flotilla.calls.balance import Balance
from flotilla.calls.endpoints import EndpointSet
from flotilla.errors import ConfigError, Unavailable
from flotilla.headers import Headers
from flotilla.pipeline import ATTEMPT_LAYERS, build_stack
from flotilla.registry import Health, Instance
from flotilla.request import Attempt, Request
from flotilla.resilience.endpoint_bulkhead import EndpointBulkhead
from flotilla.resilience.policy import BulkheadPolicy, Policy, RetryPolicy, uniform
from flotilla.resilience.signals import SignalKind, Signals
from flotilla.testing import Cluster, wait_for


class First:
    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        return endpoints[0]


class Directory:
    def __init__(self, endpoints: EndpointSet) -> None:
        self.endpoints = endpoints

    def get(self, service: str) -> EndpointSet:
        return self.endpoints


def capped(per_endpoint: int | None) -> Policy:
    return Policy(bulkhead=BulkheadPolicy(per_endpoint=per_endpoint))


class Setup:
    """Two endpoints behind a held transport, balanced by "always the first available"."""

    def __init__(self, policy: Policy) -> None:
        self.gate = asyncio.Event()
        self.sent: list[str] = []
        self.endpoints = EndpointSet("svc")
        self.endpoints.update(
            [
                Instance(
                    id=f"e{i}",
                    service="svc",
                    address=f"127.0.0.1:{9000 + i}",
                    health=Health.HEALTHY,
                )
                for i in range(2)
            ]
        )
        self.signals = Signals()
        layer = EndpointBulkhead(uniform(policy), self.signals)
        stack = build_stack({"bulkhead": layer}, self.send, ATTEMPT_LAYERS)
        directory: Any = Directory(self.endpoints)
        self.balance = Balance(directory, stack, First())

    async def send(self, attempt: Attempt) -> msgspec.Raw:
        self.sent.append(attempt.endpoint.id)
        await self.gate.wait()
        return msgspec.Raw(codec.encode(attempt.endpoint.id))

    def call(self, policy: Policy | None = None) -> asyncio.Task[msgspec.Raw]:
        request = Request("svc", "m", {}, Headers(request_id="r"), policy=policy)
        return asyncio.ensure_future(self.balance(request))


async def test_a_full_endpoint_is_skipped_before_anything_is_sent() -> None:
    setup = Setup(capped(1))
    first, second = setup.call(), setup.call()
    await wait_for(lambda: len(setup.sent) == 2)
    assert setup.sent == ["e0", "e1"]  # e0 full: the second call went to e1 unsent to e0
    (signal,) = setup.signals.recent
    assert (signal.kind, signal.endpoint, signal.detail["side"]) == (
        SignalKind.SHED,
        "e0",
        "caller",
    )
    setup.gate.set()
    assert [codec.decode(await call) for call in (first, second)] == ["e0", "e1"]
    assert [e.inflight for e in setup.endpoints.endpoints.values()] == [0, 0]


async def test_every_endpoint_full_fails_at_once_saying_why() -> None:
    setup = Setup(capped(1))
    held = [setup.call(), setup.call()]
    await wait_for(lambda: len(setup.sent) == 2)
    with pytest.raises(Unavailable, match=r"2 tried, none took it.*per_endpoint 1") as caught:
        await setup.call()
    assert caught.value.never_sent
    assert setup.sent == ["e0", "e1"]
    setup.gate.set()
    await asyncio.gather(*held)


async def test_no_cap_by_default_and_a_calls_own_policy_wins() -> None:
    setup = Setup(Policy())
    held = [setup.call() for _ in range(3)]
    await wait_for(lambda: len(setup.sent) == 3)
    assert setup.sent == ["e0"] * 3
    held.append(setup.call(policy=capped(2)))  # e0 has 3: this one goes elsewhere
    await wait_for(lambda: len(setup.sent) == 4)
    assert setup.sent[-1] == "e1"
    setup.gate.set()
    await asyncio.gather(*held)


def test_a_per_endpoint_cap_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="per_endpoint must be at least 1"):
        BulkheadPolicy(per_endpoint=0)


class Held(Service, name="held"):
    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0

    @rpc
    async def hold(self) -> None:
        self.running += 1
        await self.gate.wait()


async def test_every_node_caps_its_calls_per_endpoint_as_its_policies_say() -> None:
    policy = Policy(bulkhead=BulkheadPolicy(per_endpoint=1), retry=RetryPolicy(max_attempts=1))
    async with Cluster(policies=uniform(policy)) as cluster:
        held = Held()
        await cluster.add(held)
        first = asyncio.ensure_future(cluster.call("held.hold"))
        await wait_for(lambda: held.running == 1)
        with pytest.raises(Unavailable, match="per_endpoint 1") as caught:
            async with asyncio.timeout(5.0):  # uncapped, the call would wait at the gate
                await cluster.call("held.hold")
        assert caught.value.never_sent
        assert held.running == 1
        held.gate.set()
        await first

"""The resilience layers every node has: which, where, and that given ones take their place."""

from __future__ import annotations

from random import Random
from typing import Any

from flotilla import FlotillaError, Service, fallback, rpc
from flotilla.clock import SystemClock
from flotilla.resilience.breakers import Breakers
from flotilla.resilience.bulkhead import Bulkhead
from flotilla.resilience.endpoint_bulkhead import EndpointBulkhead
from flotilla.resilience.fallback import Fallbacks
from flotilla.resilience.faults import Faults
from flotilla.resilience.policy import uniform
from flotilla.resilience.retry import Retry
from flotilla.resilience.signals import Signals
from flotilla.runtime.resilience_layers import client_layers, server_layers


class Plain(Service, name="plain"):
    @rpc
    async def get(self) -> int:
        return 1


class WithFallback(Service, name="front"):
    @fallback("catalog.get")
    async def cached(self, error: FlotillaError) -> int:
        return 0


def options() -> dict[str, Any]:
    return {
        "policies": uniform(),
        "signals": Signals(),
        "clock": SystemClock(),
        "random": Random(1),
    }


def test_every_caller_gets_retry_breaker_and_the_per_endpoint_bulkhead() -> None:
    layers = client_layers([Plain()], {}, **options())
    assert sorted(layers) == ["breaker", "bulkhead", "retry"]
    assert isinstance(layers["retry"], Retry)
    assert isinstance(layers["breaker"], Breakers)
    assert isinstance(layers["bulkhead"], EndpointBulkhead)


def test_a_fallback_layer_only_when_a_hosted_service_declares_one() -> None:
    layers = client_layers([Plain(), WithFallback()], {}, **options())
    assert isinstance(layers["fallback"], Fallbacks)


def test_a_given_layer_takes_the_place_of_the_default() -> None:
    async def mine(request: object, call_next: Any) -> Any:
        return await call_next(request)

    layers = client_layers([Plain()], {"breaker": mine, "user": mine}, **options())
    assert layers["breaker"] is mine
    assert layers["user"] is mine


def test_a_hosting_node_serves_behind_its_bulkhead_and_fault_switch() -> None:
    faults = Faults()
    layers = server_layers(None, faults=faults, **options())
    assert sorted(layers) == ["bulkhead", "faults"]
    assert isinstance(layers["bulkhead"], Bulkhead)
    assert layers["faults"] is faults
    other = Faults()
    assert server_layers({"faults": other}, faults=faults, **options())["faults"] is other

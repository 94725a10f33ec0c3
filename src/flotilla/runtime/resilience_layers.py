"""The resilience layers every node has, unless it is given others of the same name.

::

    client (every node)        fallback (when a hosted service declares @fallback),
                               retry, breaker, bulkhead (per endpoint; idle unless a
                               policy sets BulkheadPolicy.per_endpoint)
    server (a hosting node)    bulkhead, faults

Each stands in its place of :data:`~flotilla.pipeline.CLIENT_STACK` or
:data:`~flotilla.runtime.dispatcher.SERVER_STACK`, asks the node's policies and
reports into the node's signals.  A layer that draws at random gets a
generator of its own, seeded from the node's: reproducible under a seed, and
its draws never shift those of the injected faults, which use the node's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from random import Random
from typing import Any

from flotilla.clock import Clock
from flotilla.pipeline import Middleware
from flotilla.resilience.breakers import Breakers
from flotilla.resilience.bulkhead import Bulkhead
from flotilla.resilience.endpoint_bulkhead import EndpointBulkhead
from flotilla.resilience.fallback import Fallbacks
from flotilla.resilience.faults import Faults
from flotilla.resilience.policy import PolicyLookup
from flotilla.resilience.retry import Retry
from flotilla.resilience.signals import Signals
from flotilla.runtime.dispatcher import Incoming
from flotilla.service import Service

__all__ = ["client_layers", "server_layers"]


def client_layers(
    services: Sequence[Service],
    given: Mapping[str, Middleware[Any]],
    *,
    policies: PolicyLookup,
    signals: Signals,
    clock: Clock,
    random: Random,
) -> dict[str, Middleware[Any]]:
    """The caller's resilience layers; ``given`` ones take their place."""
    jitter, open_jitter = (Random(random.getrandbits(64)) for _ in range(2))
    layers: dict[str, Middleware[Any]] = {
        # Backoffs and hedge delays are waited out in real time, as deadlines are
        # (time.monotonic()): on a test's fake clock they would never end.
        "retry": Retry(policies, signals, random=jitter.random),
        "breaker": Breakers(policies, signals, clock, random_source=open_jitter.random),
        "bulkhead": EndpointBulkhead(policies, signals),
    }
    fallbacks = Fallbacks.of_services(services, signals=signals)
    if fallbacks:  # what the hosted services declare with @fallback
        layers["fallback"] = fallbacks
    return {**layers, **given}


def server_layers(
    given: Mapping[str, Middleware[Incoming]] | None,
    *,
    policies: PolicyLookup,
    signals: Signals,
    clock: Clock,
    random: Random,
    faults: Faults,
) -> dict[str, Middleware[Incoming]]:
    """The serving node's resilience layers (``faults``: the node's switch); ``given`` win."""
    probes = Random(random.getrandbits(64))
    return {
        "bulkhead": Bulkhead(policies, signals, clock=clock, random=probes),
        "faults": faults,
        **(given or {}),
    }

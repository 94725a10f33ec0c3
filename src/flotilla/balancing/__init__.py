"""Load balancing: which available endpoint a call goes to.

A strategy is anything with ``select(endpoints, request)``
(:class:`Strategy`); the built-in ones are named so configuration can pick one
by string through :func:`resolve_strategy`::

    p2c (alias peak_ewma)    power of two choices by latency x inflight (default)
    round_robin              each endpoint in turn
    random                   uniform
    weighted                 random, in proportion to the ``weight`` metadata
    consistent_hash:<key>    the same request key to the same endpoint
"""

from __future__ import annotations

from collections.abc import Callable

from flotilla.balancing.base import Endpoint, RequestView, Strategy
from flotilla.balancing.hashring import ConsistentHash
from flotilla.balancing.p2c import PeakEwma
from flotilla.balancing.random import Random
from flotilla.balancing.round_robin import RoundRobin
from flotilla.balancing.weighted import Weighted
from flotilla.errors import ConfigError

__all__ = [
    "DEFAULT_STRATEGY",
    "ConsistentHash",
    "Endpoint",
    "PeakEwma",
    "Random",
    "RequestView",
    "RoundRobin",
    "Strategy",
    "Weighted",
    "resolve_strategy",
]

# P2C adapts to slow and busy replicas without any configuration, which is
# what a caller that did not choose wants.
DEFAULT_STRATEGY = "p2c"

# Strategies that take no option; consistent_hash needs its key and is parsed apart.
_BY_NAME: dict[str, Callable[[], Strategy]] = {
    "p2c": PeakEwma,
    "peak_ewma": PeakEwma,
    "round_robin": RoundRobin,
    "random": Random,
    "weighted": Weighted,
}
_KNOWN = ", ".join([*_BY_NAME, "consistent_hash:<key>"])


def resolve_strategy(spec: str | Strategy) -> Strategy:
    """A new strategy for a name like ``"p2c"`` or ``"consistent_hash:user_id"``; a strategy as is.

    Each call returns a new instance: strategies keep state (a counter, a
    ring) that must not be shared between unrelated callers.
    """
    if not isinstance(spec, str):
        if not callable(getattr(spec, "select", None)):
            raise ConfigError(f"a balancing strategy must be a name or have select(), not {spec!r}")
        return spec
    name, colon, option = spec.partition(":")
    if name == "consistent_hash":
        if not option:
            raise ConfigError("consistent_hash needs a key, as in 'consistent_hash:user_id'")
        return ConsistentHash(option)
    factory = _BY_NAME.get(name)
    if factory is None:
        raise ConfigError(f"unknown balancing strategy {spec!r}; known: {_KNOWN}")
    if colon:
        raise ConfigError(f"balancing strategy {name!r} takes no option, got {spec!r}")
    return factory()

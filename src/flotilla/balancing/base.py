"""What a balancing strategy is, and the endpoint state it chooses by.

A strategy is one method, :meth:`Strategy.select`, over the endpoints that are
available *now*: the caller's local view filters out unhealthy, disconnected
and (with the resilience layer) breaker-opened endpoints before a strategy
ever sees them, so a strategy never has to know why an endpoint is missing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from flotilla.registry.base import Instance

__all__ = ["Endpoint", "RequestView", "Strategy"]

_exp = math.exp

# How fast the latency average forgets: after DECAY_SECONDS without samples an
# old peak weighs 1/e.  Finagle and Linkerd use 10 s; shorter reacts faster to a
# recovered replica but lets one slow burst be forgotten too soon.
DECAY_SECONDS = 10.0
# The latency a new endpoint is assumed to have until it has answered: low
# enough to get traffic at once, high enough not to attract a stampede.
INITIAL_LATENCY = 0.001


class RequestView(Protocol):
    """What a strategy may read of a request (for a hash key, say)."""

    @property
    def args(self) -> Mapping[str, Any]: ...

    @property
    def meta(self) -> Mapping[str, str]: ...


class Endpoint:
    """One instance of a service as a caller sees it: its address and its observed load.

    ``inflight`` counts calls sent and not yet answered; ``latency`` is a
    peak-sensitive moving average of answer times (seconds): a sample above the
    average replaces it at once, samples below pull it down slowly.  That makes
    a replica that just turned slow unattractive immediately, and one that
    recovered regain traffic over :data:`DECAY_SECONDS`.
    """

    __slots__ = ("_instance", "_latency", "_stamp", "address", "inflight", "weight")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.inflight = 0
        self._latency = INITIAL_LATENCY
        self._stamp = time.monotonic()

    @property
    def instance(self) -> Instance:
        return self._instance

    @instance.setter
    def instance(self, instance: Instance) -> None:
        # Derived once per registry change, not on every call that reads them.
        self._instance = instance
        self.address: str = instance.address
        """``host:port`` of the instance."""
        self.weight: float = _weight(instance)
        """The ``weight`` metadata (default 1); a bad or non-positive value counts as 1."""

    @property
    def id(self) -> str:
        return self._instance.id

    def latency(self, now: float | None = None) -> float:
        """The current peak-EWMA latency estimate, decayed to ``now``."""
        now = time.monotonic() if now is None else now
        # Clamped like record(): a ``now`` read before the last sample (another
        # thread, a caller's stale reading) must not inflate the estimate, and
        # far enough back it would overflow math.exp.
        return self._latency * math.exp(-max(now - self._stamp, 0.0) / DECAY_SECONDS)

    def record(self, seconds: float, now: float | None = None) -> None:
        """Fold one observed answer time into the average."""
        now = time.monotonic() if now is None else now
        if seconds > self._latency:
            self._latency = seconds
        else:
            weight = math.exp(-max(now - self._stamp, 0.0) / DECAY_SECONDS)
            self._latency = self._latency * weight + seconds * (1.0 - weight)
        self._stamp = now

    def cost(self, now: float | None = None) -> float:
        """What P2C minimises: expected latency times queue length."""
        # latency() inlined: this runs twice on every call P2C balances.
        elapsed = (time.monotonic() if now is None else now) - self._stamp
        latency = self._latency * _exp(-elapsed / DECAY_SECONDS) if elapsed > 0 else self._latency
        return latency * (self.inflight + 1)

    def __repr__(self) -> str:
        return f"Endpoint({self.instance.id!r}, {self.address!r}, inflight={self.inflight})"


def _weight(instance: Instance) -> float:
    try:
        weight = float(instance.metadata.get("weight", "1"))
    except ValueError:
        return 1.0
    return weight if weight > 0 and math.isfinite(weight) else 1.0


class Strategy(Protocol):
    """Chooses one of the available endpoints for a request."""

    def select(self, endpoints: Sequence[Endpoint], request: RequestView) -> Endpoint:
        """Pick one of ``endpoints`` (never empty; all available) for ``request``."""
        ...

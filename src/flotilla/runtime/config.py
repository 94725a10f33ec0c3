"""A node's configuration: one typed value that the environment, the system file and tests fill.

::

    NodeConfig(registry="sqlite:///var/lib/shop/registry.db", secret=b"...",
               strategies={"carts": "consistent_hash:cart_id"})

Everything here is plain data (it can be written in ``flotilla.toml``, read from
``FLOTILLA_*`` variables, printed and compared).  What cannot be data (a
registry object shared by the nodes of a test, a fake clock, middleware
instances) is passed to :class:`~flotilla.runtime.node.Node` beside it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from flotilla.balancing import DEFAULT_STRATEGY, resolve_strategy
from flotilla.calls.deadline import DEFAULT_TIMEOUT
from flotilla.data.policy import RelayPolicy
from flotilla.errors import ConfigError
from flotilla.events import EVENT_BACKENDS
from flotilla.events.policy import DeliveryPolicy
from flotilla.resilience.config import PolicyTable

__all__ = ["NodeConfig", "Timings"]

_Seconds = Annotated[float, msgspec.Meta(gt=0)]
_Pause = Annotated[float, msgspec.Meta(ge=0)]


class Timings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The node's clock settings, in seconds.

    A dead instance leaves callers' views within ``ttl`` plus the registry's
    watch latency; ``heartbeat`` must be well under ``ttl`` so that one late
    beat does not expire a live instance.  ``grace`` is how long a stopping
    node keeps serving after it deregistered (callers' views catch up);
    ``drain`` bounds the wait for its calls in flight after that.
    """

    ttl: _Seconds = 1.5
    heartbeat: _Seconds = 0.4
    grace: _Pause = 0.5
    drain: _Pause = 10.0
    health_timeout: _Seconds | None = None
    """How long the default health check (``Service.health``, run every heartbeat) may
    take; default ``min(1, (ttl - heartbeat) / 2)``."""

    def __post_init__(self) -> None:
        # Meta constraints hold for decoded values only; a value built in code
        # is checked here.
        for name in ("ttl", "heartbeat", "grace", "drain", "health_timeout"):
            value = getattr(self, name)
            if value is not None and not (0 <= value < float("inf")):
                raise ConfigError(f"timings.{name} must be a finite number of seconds >= 0")
        if not (self.ttl > 0 and self.heartbeat > 0):
            raise ConfigError("timings.ttl and timings.heartbeat must be positive")
        if self.health_timeout is not None and not self.health_timeout > 0:
            raise ConfigError("timings.health_timeout must be positive")
        if self.heartbeat + self.check_timeout >= self.ttl:
            # The default check runs once per heartbeat and its result is published
            # on the next beat: a check slower than the lease lasts reports too late.
            raise ConfigError("heartbeat + health_timeout must be shorter than the lease ttl")

    @property
    def check_timeout(self) -> float:
        """The health check timeout in effect."""
        if self.health_timeout is not None:
            return self.health_timeout
        return min(1.0, (self.ttl - self.heartbeat) / 2)


class NodeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a node registers, how it authenticates, listens and balances."""

    registry: str = "memory://"
    """A registry URL (``memory://``, ``sqlite:///path.db``, ``nats://host:4222``)."""
    events: str = "memory://"
    """An event backend URL (``memory://``, ``sqlite:///path/events.db``, ``nats://host:4222``
    for NATS JetStream); opened when the node first emits or starts a consumer."""
    delivery: DeliveryPolicy = msgspec.field(default_factory=DeliveryPolicy)
    """How the node's event consumers redeliver, dead-letter and run handlers at once."""
    secret: bytes | None = None
    """The cluster secret; None gives the node a random one (it can then call only itself)."""
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    """0: any free port."""
    advertise: str | None = None
    """The host others reach this node at (default: the bound host)."""
    strategy: str = DEFAULT_STRATEGY
    """How calls to a service are balanced, unless ``strategies`` names it."""
    strategies: dict[str, str] = msgspec.field(default_factory=dict)
    """Per called service: ``{"carts": "consistent_hash:cart_id"}``."""
    default_timeout: Annotated[float, msgspec.Meta(gt=0)] = DEFAULT_TIMEOUT
    """The deadline of a call whose caller and method set none."""
    timings: Timings = msgspec.field(default_factory=Timings)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    """Labels every instance of the node publishes."""
    ops_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    """The ops HTTP port (``/healthz``, ``/readyz``, ``/status``); 0: any free port; None: off."""
    ops_host: str | None = None
    """Where the ops port binds (default: ``host``); ``0.0.0.0`` for probes from outside."""
    resilience: PolicyTable = msgspec.field(default_factory=PolicyTable)
    """The resilience policies of calls, by called service and method (``[resilience]``)."""
    data_dir: str | None = None
    """Where services' SQLite databases go by default (``<data_dir>/<service>.db``);
    None: in memory (tests)."""
    database: str | None = None
    """The database URL of the node's one service with a database (``FLOTILLA_DATABASE_URL``)."""
    databases: dict[str, str] = msgspec.field(default_factory=dict)
    """Database URL per service, keyed by the name in lower case with ``-`` as ``_``
    (``FLOTILLA_DATABASE_URL_<SERVICE>``); see :mod:`flotilla.data.url`."""
    relay: RelayPolicy = msgspec.field(default_factory=RelayPolicy)
    """How the outbox relays of the node's databases poll, claim, back off and prune."""

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("ops_port", self.ops_port)):
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{name} {port} is not a port number")
        if not self.default_timeout > 0:
            raise ConfigError("default_timeout must be positive")
        EVENT_BACKENDS.check(self.events)  # an unknown scheme fails here, not on first use
        for spec in (self.strategy, *self.strategies.values()):
            resolve_strategy(spec)  # an unknown name fails here, not on the first call

    def replace(self, **changes: object) -> NodeConfig:
        """A copy with ``changes`` applied (checked again)."""
        return msgspec.structs.replace(self, **changes)

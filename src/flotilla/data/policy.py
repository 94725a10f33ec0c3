"""What the database and the outbox relay decide, as data: how long to wait, how much to take.

The mechanisms (:mod:`flotilla.data.database`, :mod:`flotilla.data.relay`)
ask these values and keep no constants of their own.
"""

from __future__ import annotations

import msgspec

from flotilla.errors import ConfigError
from flotilla.resilience.backoff import capped_exponential

__all__ = ["Backoff", "DatabasePolicy", "RelayPolicy"]


def _positive(value: float, where: str) -> None:
    if not value > 0:
        raise ConfigError(f"{where} must be positive, not {value}")


class Backoff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Capped exponential backoff: ``min(max, base * 2 ** (failures - 1))``."""

    base: float = 0.05
    max: float = 5.0

    def __post_init__(self) -> None:
        _positive(self.base, "backoff.base")
        if self.max < self.base:
            raise ConfigError(f"backoff.max ({self.max}) must be at least backoff.base")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (0 after none)."""
        if failures <= 0:
            return 0.0
        return capped_exponential(self.base, self.max, failures - 1)


class DatabasePolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How a database is reached at start, and how often it is tried again while it is not."""

    connect_timeout: float = 5.0
    """Seconds one attempt (connect and migrate) may take."""
    reconnect: Backoff = msgspec.field(default_factory=lambda: Backoff(base=0.2, max=5.0))
    busy_timeout: float = 5.0
    """SQLite: seconds a writer waits for another process's write to finish."""

    def __post_init__(self) -> None:
        _positive(self.connect_timeout, "database.connect_timeout")
        _positive(self.busy_timeout, "database.busy_timeout")


class RelayPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the outbox relay claims, publishes, backs off and prunes."""

    poll: float = 0.2
    """Seconds between looks for rows committed by other processes (a local commit wakes
    the relay at once)."""
    batch: int = 256
    """Rows claimed at once."""
    lease: float = 10.0
    """Seconds a claim holds its rows; a relay that died frees them when this runs out."""
    in_flight: int = 64
    """Publishes awaited at once (rows of one key always one after another)."""
    backoff: Backoff = msgspec.field(default_factory=Backoff)
    """After a failed publish or a database error."""
    keep_sent: float = 3600.0
    """Seconds a sent row stays in the outbox (to inspect) before it is pruned."""
    keep_handled: float = 7 * 86400.0
    """Seconds an inbox row is kept: longer than any event can still be redelivered."""
    prune_every: float = 60.0

    def __post_init__(self) -> None:
        for name in ("poll", "lease", "keep_sent", "keep_handled", "prune_every"):
            _positive(getattr(self, name), f"relay.{name}")
        if self.batch < 1 or self.in_flight < 1:
            raise ConfigError("relay.batch and relay.in_flight must be at least 1")

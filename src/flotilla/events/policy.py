"""How a consumer treats a delivery that failed: the data its decisions are read from."""

from __future__ import annotations

import msgspec

from flotilla.errors import ConfigError
from flotilla.resilience.backoff import capped_exponential

__all__ = ["DeliveryPolicy"]


class DeliveryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Redelivery, dead-lettering and concurrency of one consumer.

    A handler that raises gets the event again after :meth:`backoff` seconds,
    up to ``max_deliveries`` deliveries in all; then the event is
    dead-lettered with the last error and the consumer goes on.
    """

    max_deliveries: int = 5
    """Deliveries in all, the first included, before the event is dead-lettered."""
    backoff_base: float = 0.5
    """Seconds before the second delivery; doubled for each one after, up to ``backoff_max``."""
    backoff_max: float = 30.0
    ack_wait: float = 30.0
    """Seconds a delivery may stay unacked before the backend gives it to another consumer;
    a running handler renews it every third of that."""
    max_concurrent: int = 64
    """Handlers of this consumer running at once (events of one key always run one at a time)."""

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ConfigError(
                f"delivery: max_deliveries must be at least 1, not {self.max_deliveries}"
            )
        if not self.backoff_base >= 0:
            raise ConfigError(
                f"delivery: backoff_base must not be negative, not {self.backoff_base}"
            )
        if not self.backoff_max >= self.backoff_base:
            raise ConfigError("delivery: backoff_max must be at least backoff_base")
        if not self.ack_wait > 0:
            raise ConfigError(f"delivery: ack_wait must be positive, not {self.ack_wait}")
        if self.max_concurrent < 1:
            raise ConfigError("delivery: max_concurrent must be at least 1")

    def backoff(self, attempt: int) -> float:
        """Seconds before delivering again an event whose ``attempt``-th delivery failed."""
        return capped_exponential(self.backoff_base, self.backoff_max, attempt - 1)

    @property
    def keepalive_interval(self) -> float:
        """How often a running handler tells the backend it is still at it."""
        return self.ack_wait / 3

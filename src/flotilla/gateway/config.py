"""What a gateway is configured with: plain data, checked when made."""

from __future__ import annotations

from dataclasses import dataclass

from flotilla.errors import ConfigError
from flotilla.gateway.auth import TokenSettings
from flotilla.gateway.body import DEFAULT_MAX_BODY
from flotilla.gateway.routes import RateLimit

__all__ = ["DEFAULT_RATE_LIMIT", "GatewayConfig"]

DEFAULT_RATE_LIMIT = RateLimit(rate=50.0, burst=100)
"""Per client: 50 requests a second on average, bursts of 100."""


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """A gateway's settings (the routes and the node are given beside them)."""

    title: str = "Flotilla gateway"
    """The OpenAPI document's and the docs page's title."""
    max_body: int = DEFAULT_MAX_BODY
    tokens: TokenSettings | None = None
    """How bearer tokens are signed and checked; needed by any route with ``auth``."""
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT
    """Every client's bucket, unless a route has its own; None: no limit."""
    limiter: str = "memory://"
    """Where buckets live: ``memory://`` or ``redis://host:port/db``."""
    cors_origins: tuple[str, ...] = ()
    """Origins browsers may call from (``("*",)`` for any); empty: no CORS headers."""
    startup_timeout: float = 30.0
    """How long start waits for each routed service to publish its method table."""
    trusted_proxies: tuple[str, ...] = ()
    """Peers whose ``X-Forwarded-For`` names the client (for rate limits by address)."""

    def __post_init__(self) -> None:
        if self.max_body < 1:
            raise ConfigError(f"max_body must be at least 1 byte, not {self.max_body}")
        if not self.startup_timeout > 0:
            raise ConfigError("startup_timeout must be a positive number of seconds")

"""A call on its way out, as the client pipeline's middlewares see and amend it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flotilla.balancing import Endpoint

__all__ = ["Request"]


@dataclass(slots=True, kw_only=True)
class Request:
    """One outgoing call.  Middlewares may read and set any field; balancing sets ``endpoint``."""

    service: str
    method: str
    args: dict[str, Any]
    request_id: str
    caller: str = ""
    meta: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None
    """Absolute, on ``time.monotonic()``; fixed by the deadline middleware."""
    timeout: float | None = None
    """The method's own timeout: caps the caller's deadline, or sets one if there is none."""
    idempotent: bool = False
    endpoint: Endpoint | None = None
    connect_seconds: float = 0.0
    """Time the transport spent opening a connection for this attempt (not the endpoint's
    latency, so balancing leaves it out of the endpoint's average)."""
    attempt: int = 0

    @property
    def target(self) -> str:
        return f"{self.service}.{self.method}"

"""The values the client pipeline passes along: a request, and each attempt at it.

A :class:`Request` is what the caller asked: a method, its arguments, the call's
:class:`~flotilla.headers.Headers`, and what the method declares of itself
(timeout, idempotence).  Layers above balancing (deadline, retry) see requests.

Balancing turns a request into one :class:`Attempt` per try: where it went and
which try it is.  Layers below balancing (breaker, bulkhead, metrics) and the
transport see attempts; a retry or a hedge is a second attempt of the same
request, never a change to the first.  What a try cost is the attempt's own:
the transport notes there the time it spent connecting (which is no measure
of the endpoint), and nothing is written into the request the tries share.

Both stand below ``calls`` and ``resilience``, whose layers pass them along.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flotilla.headers import Headers

if TYPE_CHECKING:
    from flotilla.balancing import Endpoint
    from flotilla.resilience.policy import Policy

__all__ = ["Attempt", "Request"]


class Request:
    """One call as the caller asked it.

    ``headers`` is replaced, never changed in place (the deadline layer fixes
    the deadline that way); layers below retry must treat a request as read-only,
    since several attempts may share it (only balancing adds to ``tried``).
    """

    __slots__ = (
        "args",
        "headers",
        "idempotent",
        "method",
        "payload",
        "policy",
        "service",
        "timeout",
        "tried",
    )

    def __init__(
        self,
        service: str,
        method: str,
        args: Mapping[str, Any],
        headers: Headers,
        *,
        payload: bytes = b"",
        timeout: float | None = None,
        idempotent: bool = False,
        policy: Policy | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self.args = args
        """The arguments as the caller gave them (what a consistent-hash strategy may key on)."""
        self.payload = payload
        """The arguments encoded, once for every attempt (the caller fills it)."""
        self.headers = headers
        self.timeout = timeout
        """The method's own timeout: caps the caller's deadline, or sets one if there is none."""
        self.idempotent = idempotent
        """The method says a second attempt is harmless."""
        self.policy = policy
        """Resilience policy set for this one call; None: the configured one for its method."""
        self.tried: set[str] | None = None
        """Ids of the endpoints this call's attempts went to, which balancing avoids for a
        retry or a hedge when it can.  None until the first failure that was sent (or a
        hedge) makes the set: a call answered at once pays for no set."""

    @property
    def target(self) -> str:
        """``service.method``."""
        return f"{self.service}.{self.method}"

    @property
    def meta(self) -> Mapping[str, str]:
        """The headers' metadata (what a consistent-hash strategy may key on)."""
        return self.headers.meta

    @property
    def deadline(self) -> float | None:
        """Absolute, on ``time.monotonic()``; fixed by the deadline layer."""
        return self.headers.deadline

    def __repr__(self) -> str:
        return f"Request({self.target!r}, request_id={self.headers.request_id!r})"


class Attempt:
    """One try of a request on one endpoint (``number`` counts from 1 per request)."""

    __slots__ = ("connect_seconds", "endpoint", "number", "request")

    def __init__(self, request: Request, endpoint: Endpoint, number: int) -> None:
        self.request = request
        self.endpoint = endpoint
        self.number = number
        self.connect_seconds = 0.0
        """Time the transport spent opening a connection for this try (not the
        endpoint's latency, so balancing leaves it out of the endpoint's average)."""

    @property
    def target(self) -> str:
        """``service.method``."""
        return self.request.target

    @property
    def deadline(self) -> float | None:
        """The request's deadline (absolute, ``time.monotonic()``)."""
        return self.request.headers.deadline

    def __repr__(self) -> str:
        return f"Attempt({self.target!r}, #{self.number}, {self.endpoint.address!r})"

"""What the balancing tests share: a stand-in request and endpoints to choose from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flotilla.balancing import Endpoint
from flotilla.registry.base import Instance


@dataclass(frozen=True)
class Request:
    """A request as a strategy sees it: :class:`flotilla.balancing.base.RequestView`, no more."""

    args: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)


REQUEST = Request()


def endpoints(n: int, *, start: int = 0, prefix: str = "e", service: str = "s") -> list[Endpoint]:
    """``n`` endpoints with ids ``<prefix><i>`` for i from ``start``, each on a port of its own."""
    return [
        Endpoint(Instance(id=f"{prefix}{i}", service=service, address=f"127.0.0.1:{1000 + i}"))
        for i in range(start, start + n)
    ]


def endpoint(name: str, weight: str | None = None) -> Endpoint:
    """One endpoint called ``name``, with ``weight`` metadata when given."""
    metadata = {} if weight is None else {"weight": weight}
    return Endpoint(Instance(id=name, service="s", address="127.0.0.1:1000", metadata=metadata))

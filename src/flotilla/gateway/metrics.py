"""The gateway's Prometheus metrics, in a registry of its own (no process-wide state).

* ``flotilla_gateway_requests_total{route, status}``: answers by route and status;
* ``flotilla_gateway_request_seconds{route}``: how long answers took.

``route`` is the route's name (``GET /api/orders/{id}``), never the raw path:
ids in paths would make a series per id.  Requests no route matched count
under ``unmatched``.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# From a millisecond (a cached answer) to the 10 s default deadline.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """Counts and times the gateway's answers."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flotilla_gateway_requests",
            "HTTP answers of the gateway, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flotilla_gateway_request_seconds",
            "Seconds from a request's arrival to its answer, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # Bounded by routes x statuses: route names are templates, never raw paths.
        self._series: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Record one answer."""
        series = self._series.get((route, status))
        if series is None:
            # labels() costs a lock and a tuple per call: look each series up once.
            series = self._series[route, status] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        series[0].inc()
        series[1].observe(seconds)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

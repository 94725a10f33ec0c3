"""What a node's ops port answers: liveness, readiness and status, as JSON.

* ``GET /healthz``: liveness.  200 whenever the event loop answers at all; a
  probe that gets nothing knows the process is stuck.  Nothing else is
  consulted: a failing dependency is no reason to restart the process.
* ``GET /readyz``: readiness.  200 once the node has started, is not
  stopping, and every health check of every service passes; else 503 with
  the reasons, e.g. ``{"ready": false, "state": "running", "failing":
  [{"service": "orders", "check": "database", "reason": "returned False"}]}``.
* ``GET /status``: the node's state, its instances and their health, each
  check's last result, the breakers it holds open or half-open toward others
  (from its :class:`~flotilla.resilience.signals.Signals` hub) and its recent
  signals.  ``flotilla ps`` and the ``flotilla run`` table read it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flotilla.runtime.ops_http import Route

if TYPE_CHECKING:
    from flotilla.runtime.node import Node

__all__ = ["RECENT_SIGNALS", "ops_routes"]

RECENT_SIGNALS = 50
"""How many of the latest signals ``/status`` lists."""


def ops_routes(node: Node) -> dict[str, Route]:
    """The routes of ``node``'s ops port."""
    return {
        "/healthz": lambda: (200, {"alive": True}),
        "/readyz": lambda: readiness(node),
        "/status": lambda: (200, status(node)),
    }


def readiness(node: Node) -> tuple[int, dict[str, Any]]:
    """200 and ``ready: true``, or 503 with the state and every failing check."""
    failing = _failing_checks(node)
    ready = node.state == "running" and not failing
    body: dict[str, Any] = {"ready": ready, "state": node.state}
    if failing:
        body["failing"] = failing
    return (200 if ready else 503), body


def _failing_checks(node: Node) -> list[dict[str, str]]:
    if node.health is None:
        return []
    failing = []
    names = node.health.check_names()
    for (service, check), result in zip(names, node.health.results(), strict=True):
        if result is None:
            failing.append({"service": service, "check": check, "reason": "no result yet"})
        elif not result.ok:
            failing.append({"service": service, "check": check, "reason": result.reason or ""})
    return failing


def status(node: Node) -> dict[str, Any]:
    """Everything ``/status`` reports (see the module docstring)."""
    monitor = node.health
    return {
        "state": node.state,
        "pid": os.getpid(),
        "instances": [
            {
                "id": instance.id,
                "service": instance.service,
                "address": instance.address,
                "health": monitor.health(instance.service) if monitor else instance.health,
            }
            for instance in node.instances
        ],
        "checks": [result for result in monitor.results() if result] if monitor else [],
        "breakers": node.breakers.current(),
        "signals": list(node.signals.recent)[-RECENT_SIGNALS:],
    }

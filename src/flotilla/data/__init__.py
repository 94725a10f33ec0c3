"""Data per service: each service's own database, the transactional outbox and the inbox.

A service declares ``db = Database(metadata=Base.metadata)``; the node opens it
(an SQLite file per service by default, PostgreSQL by URL), creates its tables,
and runs an :class:`OutboxRelay` that publishes what transactions emitted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flotilla.data.database import Database
    from flotilla.data.node_hooks import check_databases
    from flotilla.data.parts import databases_of
    from flotilla.data.policy import Backoff, DatabasePolicy, RelayPolicy
    from flotilla.data.relay import OutboxRelay
    from flotilla.data.transaction import Transaction

__all__ = [
    "Backoff",
    "Database",
    "DatabasePolicy",
    "OutboxRelay",
    "RelayPolicy",
    "Transaction",
    "check_databases",
    "databases_of",
]

# Each name's module, imported on first use: SQLAlchemy is slow to import, and
# the runtime reads this package's light modules (the URL rules) in every process.
_MODULES = {
    "Backoff": "policy",
    "Database": "database",
    "DatabasePolicy": "policy",
    "OutboxRelay": "relay",
    "RelayPolicy": "policy",
    "Transaction": "transaction",
    "check_databases": "node_hooks",
    "databases_of": "parts",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'flotilla.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"flotilla.data.{module}"), name)

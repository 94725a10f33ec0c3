"""Data per service: each service's own database, the transactional outbox and the inbox.

A service declares ``db = Database(metadata=Base.metadata)``; the node opens it
(an SQLite file per service by default, PostgreSQL by URL), creates its tables,
and runs an :class:`OutboxRelay` that publishes what transactions emitted.
"""

from __future__ import annotations

from flotilla.data.database import Database
from flotilla.data.parts import check_databases, databases_of
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

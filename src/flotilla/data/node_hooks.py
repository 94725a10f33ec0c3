"""What a node asks of the data layer, at no import cost when no service has a database.

SQLAlchemy takes longer to import than the rest of Flotilla.  A service with a
database holds a :class:`~flotilla.data.Database`, so its module is loaded
by the time a node sees the service; when it is not loaded, no service has one,
and these functions answer without importing anything.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flotilla.data.database import Database
    from flotilla.data.parts import DatabasesPart
    from flotilla.data.policy import RelayPolicy
    from flotilla.data.relay import OutboxRelay
    from flotilla.events.backend import Publisher

__all__ = ["check_databases", "data_parts", "databases_of"]

_DATABASE_MODULE = "flotilla.data.database"


def databases_of(service: object) -> list[Database]:
    """The databases declared on ``service``'s class, bound to it (none: nothing imported)."""
    if _DATABASE_MODULE not in sys.modules:
        return []
    from flotilla.data.parts import databases_of as bound

    return bound(service)


async def check_databases(service: object) -> None:
    """Raise ``Unavailable`` if a database of ``service`` is not usable (its URL, why)."""
    for database in databases_of(service):
        await database.check()


def data_parts(
    services: Sequence[object],
    *,
    data_dir: str | None,
    database: str | None,
    databases: Mapping[str, str],
    events: Publisher | None,
    relay_policy: RelayPolicy | None = None,
) -> list[DatabasesPart | OutboxRelay]:
    """The node's data parts (databases, outbox relays); none when no service has a database."""
    if _DATABASE_MODULE not in sys.modules:
        return []
    from flotilla.data.parts import data_parts as parts

    return parts(
        services,
        data_dir=data_dir,
        database=database,
        databases=databases,
        events=events,
        relay_policy=relay_policy,
    )

"""The node's data parts: the services' databases, and an outbox relay for each.

::

    start:  databases (each opened in the background: an unreachable one makes its
            service unhealthy, not the node fail) -> relays (each waits for its database)
    stop:   relays -> databases

Which URL each database gets is decided here, once, before any is opened:
a bad URL anywhere fails the start with a ``ConfigError`` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from flotilla.data.database import Database
from flotilla.data.policy import RelayPolicy
from flotilla.data.relay import OutboxRelay
from flotilla.data.url import DATABASE_ENV, choose_url
from flotilla.errors import ConfigError
from flotilla.events.backend import Publisher

__all__ = ["DatabasesPart", "data_parts", "databases_of"]

log = logging.getLogger("flotilla.data")


def databases_of(service: object) -> list[Database]:
    """The databases declared on ``service``'s class (and its bases), bound to ``service``."""
    found: dict[str, Database] = {}
    for klass in reversed(type(service).__mro__):
        for attribute, value in vars(klass).items():
            if isinstance(value, Database):
                found[attribute] = getattr(service, attribute)
            else:
                found.pop(attribute, None)  # overridden by something that is not a database
    return list(found.values())


class DatabasesPart:
    """Opens the databases of a node's services (in the background) and closes them."""

    name = "databases"

    def __init__(
        self,
        services: Sequence[object],
        *,
        data_dir: str | None,
        database: str | None,
        databases: Mapping[str, str],
    ) -> None:
        self.databases = [db for service in services for db in databases_of(service)]
        if database is not None and len(self.databases) > 1:
            owners = sorted({db.source for db in self.databases})
            raise ConfigError(
                f"{DATABASE_ENV} names one database, but this node hosts {len(self.databases)}"
                f" (of {', '.join(owners)}); name each with {DATABASE_ENV}_<SERVICE>"
            )
        self._urls = [
            choose_url(
                db.source,
                per_service=databases,
                single=database,
                declared=db.declared_url,
                data_dir=data_dir,
            )
            for db in self.databases
        ]

    async def start(self) -> None:
        opened: list[Database] = []
        try:
            for db, url in zip(self.databases, self._urls, strict=True):
                await db.open(url, background=True)
                opened.append(db)
        except BaseException:
            for db in reversed(opened):
                await db.aclose()
            raise

    async def stop(self) -> None:
        for db in reversed(self.databases):
            try:
                await db.aclose()
            except Exception:
                log.exception("closing database %s failed", db.where)


def data_parts(
    services: Sequence[object],
    *,
    data_dir: str | None,
    database: str | None,
    databases: Mapping[str, str],
    events: Publisher | None,
    relay_policy: RelayPolicy | None = None,
) -> list[DatabasesPart | OutboxRelay]:
    """The parts a node needs for its services' data: none when no service has a database."""
    part = DatabasesPart(services, data_dir=data_dir, database=database, databases=databases)
    if not part.databases:
        return []
    if events is None:
        log.info("no event backend: events emitted in transactions stay in the outbox")
        return [part]
    relays = [OutboxRelay(db, events, policy=relay_policy) for db in part.databases]
    return [part, *relays]

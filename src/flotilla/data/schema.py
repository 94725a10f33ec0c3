"""Flotilla's own tables in a service's database, and the migration run at start.

::

    flotilla_outbox   events committed with the data, waiting for the relay
    flotilla_inbox    (group, event id) of every event handled in a transaction
    flotilla_schema   (component, version): which schema each component's tables have

**Migrations at start.**  When a database opens, one transaction (serialised
across processes: ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL, so replicas starting together do not race) creates what is
missing, the URL's schema (``?schema=``, PostgreSQL), Flotilla's tables and
the service's own ``metadata`` (``create_all``: new tables, never changes
to existing ones), then reads ``flotilla_schema``:

* no row: a new database; the current :data:`SCHEMA_VERSION` is written;
* an older version: each step of :data:`UPGRADES` from it runs, in the same
  transaction, and the row is updated;
* a newer version: written by a newer Flotilla; refused (``ConfigError``)
  rather than misread.

The service's own tables are the service's: ``create_all`` adds tables but
does not alter them.  To evolve them, move to Alembic: generate the first
revision from the same ``metadata``, keep Flotilla's tables out of it with
``include_name`` (skip names starting ``flotilla_``), run ``alembic upgrade
head`` before the service starts; ``create_all`` then finds every table
present and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.schema import CreateSchema

from flotilla.data.engine import SCHEMA_EXECUTION_OPTION
from flotilla.errors import ConfigError

__all__ = ["FLOTILLA_TABLES", "SCHEMA_VERSION", "UPGRADES", "inbox", "migrate", "outbox"]

SCHEMA_VERSION = 1
"""The version of Flotilla's tables this code reads and writes."""

UPGRADES: dict[int, Callable[[Connection], None]] = {}
"""``UPGRADES[n]`` takes Flotilla's tables from version ``n`` to ``n + 1``."""

_COMPONENT = "flotilla"
# Any constant, the same in every process: the key of the PostgreSQL advisory
# lock that serialises migrations (and outbox claims, see data/outbox.py).
MIGRATION_LOCK = 0x0F107111A
_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: the rowid alias

FLOTILLA_TABLES = MetaData()

outbox = Table(
    "flotilla_outbox",
    FLOTILLA_TABLES,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(255), nullable=True),
    Column("source", String(255), nullable=False),
    Column("instance", String(255), nullable=False),
    Column("time", Float, nullable=False),
    Column("headers", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", Float, nullable=True),
    Column("sent_at", Float, nullable=True),
    # The relay's claim reads unsent rows in id order, and the earlier unsent
    # rows of a key; sent rows (kept a while, then pruned) stay out of both.
    Index(
        "flotilla_outbox_unsent",
        "id",
        postgresql_where=text("sent_at IS NULL"),
        sqlite_where=text("sent_at IS NULL"),
    ),
    Index(
        "flotilla_outbox_unsent_key",
        "key",
        "id",
        postgresql_where=text("sent_at IS NULL"),
        sqlite_where=text("sent_at IS NULL"),
    ),
    Index("flotilla_outbox_sent", "sent_at"),
)

inbox = Table(
    "flotilla_inbox",
    FLOTILLA_TABLES,
    Column("group", String(255), primary_key=True),
    Column("event_id", String(32), primary_key=True),
    Column("handled_at", Float, nullable=False, index=True),
)

schema_versions = Table(
    "flotilla_schema",
    FLOTILLA_TABLES,
    Column("component", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
)


def migrate(connection: Connection, metadata: MetaData | None) -> None:
    """Create what is missing and bring Flotilla's tables to :data:`SCHEMA_VERSION`.

    Runs inside the caller's transaction (``run_sync`` of an open one).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(text(f"pg_advisory_xact_lock({MIGRATION_LOCK})")))
        # A URL's ?schema= (data/engine.py): under the lock, so replicas do not race.
        schema = connection.get_execution_options().get(SCHEMA_EXECUTION_OPTION)
        if schema is not None:
            connection.execute(CreateSchema(schema, if_not_exists=True))
    FLOTILLA_TABLES.create_all(connection)
    if metadata is not None:
        metadata.create_all(connection)
    _bring_to_current(connection)


def _bring_to_current(connection: Connection) -> None:
    """Record the version of a new database; upgrade an older one; refuse a newer one."""
    row = connection.execute(
        select(schema_versions.c.version).where(schema_versions.c.component == _COMPONENT)
    ).first()
    if row is None:
        # create_all just made the current tables: nothing to upgrade.
        connection.execute(
            insert(schema_versions).values(component=_COMPONENT, version=SCHEMA_VERSION)
        )
        stored = SCHEMA_VERSION
    else:
        stored = row.version
    if stored > SCHEMA_VERSION:
        raise ConfigError(
            f"the database holds Flotilla tables of version {stored}, newer than this "
            f"Flotilla's ({SCHEMA_VERSION}); upgrade Flotilla"
        )
    for version in range(stored, SCHEMA_VERSION):
        UPGRADES[version](connection)
    if stored != SCHEMA_VERSION:
        connection.execute(
            update(schema_versions)
            .where(schema_versions.c.component == _COMPONENT)
            .values(version=SCHEMA_VERSION)
        )

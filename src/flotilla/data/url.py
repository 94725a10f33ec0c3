"""Which database a service uses: its URL, checked, completed and printable.

A service's database is, in this order of precedence:

1. ``FLOTILLA_DATABASE_URL_<SERVICE>`` (the service name in capitals, ``-``
   as ``_``; ``flotilla run`` sets it from the system file's ``database`` key);
2. ``FLOTILLA_DATABASE_URL`` (a process hosting a single service with a database);
3. the ``url`` given to :class:`~flotilla.data.Database` in code;
4. an SQLite file ``<data dir>/<service>.db`` (the embedded default), or, for a
   node with no data directory (tests, :mod:`flotilla.testing`), an SQLite
   database in memory.

Accepted URLs (plain schemes get their asyncio driver; SQLite paths are read
as for the registry, :mod:`flotilla.resolve`)::

    sqlite:///abs/path/orders.db     the file /abs/path/orders.db
    sqlite://rel/orders.db, x.db     relative to the working directory
    sqlite://                        an SQLite database in memory
    postgresql://user:pw@host/db     -> postgresql+asyncpg://user:pw@host/db
    postgresql://host/db?schema=orders   the tables in schema ``orders`` (created if
                                     missing), the only schema on the connection's
                                     ``search_path`` (see :mod:`flotilla.data.engine`)

**One URL for a whole system.**  ``flotilla run --database URL`` (or
``FLOTILLA_DATABASE_URL``, or ``[system] database``) still gives each service a
database of its own, through :func:`service_url`: on PostgreSQL a schema per
service on the one server database, ``<prefix>_<service>``, where the prefix is
the URL's ``schema`` option, else the system's name; on SQLite the URL names a
directory, each service a file ``<service>.db`` in it.

Anything else is a :class:`~flotilla.errors.ConfigError` naming the URL, with
its password masked, as every message about a database URL does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from flotilla.errors import ConfigError
from flotilla.resolve import expand_shorthand, mask_url, sqlite_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = [
    "DATABASE_ENV",
    "SCHEMA_OPTION",
    "choose_url",
    "database_env_name",
    "default_url",
    "is_memory",
    "mask",
    "normalize_url",
    "per_service_env",
    "schema_of",
    "service_url",
]

DATABASE_ENV = "FLOTILLA_DATABASE_URL"
"""The variable naming the database of a process's single service."""

# Each scheme a user may write, and the asyncio driver it gets.
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
SCHEMA_OPTION = "schema"
"""The URL option naming a PostgreSQL schema (ours: taken off before the driver sees it)."""
# A PostgreSQL identifier that needs no quoting (and cannot inject anything
# into the search_path setting or CREATE SCHEMA): at most 63 bytes.
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def database_env_name(service: str) -> str:
    """``FLOTILLA_DATABASE_URL_ORDERS`` for ``orders`` (``-`` becomes ``_``)."""
    return f"{DATABASE_ENV}_{service.upper().replace('-', '_')}"


def per_service_env(env_suffix: str) -> str:
    """The key under which a ``FLOTILLA_DATABASE_URL_<SUFFIX>`` value is kept in a config."""
    return env_suffix.lower().replace("-", "_")


def mask(url: str | URL) -> str:
    """The URL with its password and secret query values as ``***`` (safe to log and show)."""
    if not isinstance(url, str):
        url = url.render_as_string(hide_password=False)
    return mask_url(url)  # on text: a URL that does not parse is still masked


def normalize_url(url: str) -> URL:
    """The SQLAlchemy URL for ``url``, with its asyncio driver; ``ConfigError`` if unusable.

    SQLite URLs are read as everywhere in Flotilla (:mod:`flotilla.resolve`):
    ``sqlite:///abs/x.db`` is ``/abs/x.db``, ``sqlite://rel/x.db`` and ``rel/x.db``
    are relative to the working directory; ``sqlite://`` alone is memory.
    """
    # Imported here: this module is read by every process, SQLAlchemy only by
    # those with a database (it is slow to import).
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    url = expand_shorthand(url)
    scheme, separator, rest = url.partition("://")
    if separator and _DRIVERS.get(scheme, "").startswith("sqlite"):
        path = rest.partition("?")[0]
        if path in ("", ":memory:", "/:memory:"):
            return URL.create("sqlite+aiosqlite")
        return URL.create("sqlite+aiosqlite", database=str(Path(path).expanduser().absolute()))
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database URL {mask(url)!r} is not a URL (expected e.g. "
            "'sqlite:///var/lib/app/orders.db' or 'postgresql://user@host/db')"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        known = ", ".join(sorted({name.split("+")[0] + "://" for name in _DRIVERS}))
        raise ConfigError(f"database URL {mask(parsed)!r}: unknown scheme; known: {known}")
    parsed = parsed.set(drivername=driver)
    schema_of(parsed)  # a bad schema is refused now, not at the first connection
    return parsed


def schema_of(url: URL) -> str | None:
    """The PostgreSQL schema named by ``url``'s ``schema`` option (None: the server's default).

    ``ConfigError`` unless it is a plain lower-case identifier.
    """
    schema = url.query.get(SCHEMA_OPTION)
    if schema is None:
        return None
    if not isinstance(schema, str) or not _SCHEMA.fullmatch(schema):
        raise ConfigError(
            f"database URL {mask(url)!r}: schema must be one name of lower-case letters,"
            " digits and '_' (at most 63), not starting with a digit"
        )
    return schema


def service_url(system_url: str, system: str, service: str) -> str:
    """The database URL of ``service`` when the whole system ``system`` is given ``system_url``.

    PostgreSQL: the same server database, schema ``<prefix>_<service>`` (prefix:
    the URL's ``schema`` option, else ``system``), lower-cased, other characters
    as ``_``.  SQLite: ``system_url`` names a directory; the service gets
    ``<service>.db`` in it.  ``ConfigError`` for a URL that cannot be shared so
    (SQLite in memory, or a ``.db`` file).
    """
    normalized = normalize_url(system_url)
    if normalized.drivername.startswith("sqlite"):
        if is_memory(normalized):
            raise ConfigError(
                "a system's database cannot be SQLite in memory (each process would have its"
                " own); name a directory, as in 'sqlite:///var/lib/shop'"
            )
        assert normalized.database is not None  # not memory: a path
        directory = Path(normalized.database)
        if directory.suffix == ".db":
            raise ConfigError(
                f"a system's SQLite database {system_url!r} is a directory (a file per service"
                f" in it), not a .db file; for one service's file use {DATABASE_ENV}_<SERVICE>"
            )
        return sqlite_url(directory / f"{service}.db")
    prefix = schema_of(normalized) or system
    schema = re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{service}".lower())
    if schema[0].isdigit():
        schema = f"_{schema}"
    shared = normalized.update_query_dict({SCHEMA_OPTION: schema})
    schema_of(shared)  # too long: refused here, naming the URL
    return shared.render_as_string(hide_password=False)


def default_url(service: str, data_dir: str | None) -> str:
    """The embedded default: ``<data dir>/<service>.db``, or memory without a data directory."""
    if data_dir is None:
        return "sqlite://"
    return sqlite_url(Path(data_dir, f"{service}.db"))


def is_memory(url: URL) -> bool:
    """Whether ``url`` is an SQLite database that lives in this process's memory only."""
    return url.drivername.startswith("sqlite") and url.database in (None, "", ":memory:")


def choose_url(
    service: str,
    *,
    per_service: Mapping[str, str],
    single: str | None,
    declared: str | None,
    data_dir: str | None,
) -> URL:
    """The database URL of ``service``, by the precedence in the module docstring."""
    url = (
        per_service.get(per_service_env(service))
        or single
        or declared
        or default_url(service, data_dir)
    )
    return normalize_url(url)

"""Which registry, event backend and database a system run uses: one switch for all three.

``flotilla run`` takes each of the three URLs from, in this order:

1. its option: ``--registry``, ``--events``, ``--database``;
2. the environment: ``FLOTILLA_REGISTRY``, ``FLOTILLA_EVENTS``, ``FLOTILLA_DATABASE_URL``;
3. the system file: ``[system] registry``, ``events``, ``database``;
4. the embedded defaults: SQLite files in the data directory (``registry.db``,
   ``events.db``, and ``<service>.db`` for each service's database).

So the same system file runs on the embedded backends as it is, and on NATS
and PostgreSQL with three variables set (or three options).  The chosen
registry and events URLs reach every process unchanged (``flotilla ps``,
``call`` and ``events`` given the same variables read the same backends).

The database URL is the whole system's: each service still gets a database of
its own (:func:`flotilla.data.url.service_url`: a PostgreSQL schema each, or an
SQLite file each in a directory).  For one service, its file entry's
``database`` or a ``FLOTILLA_DATABASE_URL_<SERVICE>`` variable wins over it.

The event policies follow the same order: ``FLOTILLA_DELIVERY`` and
``FLOTILLA_RELAY`` (JSON), when set, win over the file's ``[events] delivery``
and ``relay``.

Two systems on one NATS server keep apart by the names in their URLs: the
event stream's ``?prefix=`` (default ``FLOTILLA_EVENTS``) and the registry
bucket's ``?bucket=`` (default ``flotilla_registry``); nothing is derived from
the system's name, so that the other commands, given the same URLs, find them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import msgspec

from flotilla.data.url import DATABASE_ENV, database_env_name, service_url
from flotilla.errors import ConfigError
from flotilla.resolve import anchor_sqlite
from flotilla.runtime.system_file import SystemSpec

__all__ = ["EVENTS_ENV", "REGISTRY_ENV", "choose_backends"]

REGISTRY_ENV = "FLOTILLA_REGISTRY"
EVENTS_ENV = "FLOTILLA_EVENTS"


def choose_backends(
    spec: SystemSpec,
    env: Mapping[str, str],
    *,
    registry: str | None = None,
    events: str | None = None,
    database: str | None = None,
) -> SystemSpec:
    """``spec`` with the registry, events and database URLs chosen as the module says.

    ``registry``, ``events`` and ``database`` are the command's options.  Each
    service without a database of its own (file entry or variable) gets its
    share of the system's database as its ``database``.  ``ConfigError`` if the
    system's database cannot be shared out (SQLite in memory, a ``.db`` file).
    """
    origins = dict(spec.origins)
    chosen_registry = _pick(registry, env, REGISTRY_ENV, "registry", origins)
    chosen_events = _pick(events, env, EVENTS_ENV, "events", origins)
    chosen_database = _pick(database, env, DATABASE_ENV, "database", origins)
    system_database = chosen_database or spec.database
    services = dict(spec.services)
    if system_database is not None:
        for name, service in services.items():
            if service.database is not None or env.get(database_env_name(name)):
                continue  # its own database wins
            try:
                url = service_url(system_database, spec.name, name)
            except ConfigError as exc:
                where = origins.get("system.database") or spec.where("system.database")
                raise ConfigError(f"{where}: {exc.message}") from None
            services[name] = msgspec.structs.replace(service, database=url)
    return msgspec.structs.replace(
        spec,
        # Dropped here, the variable reaches every process unchanged instead.
        delivery=None if env.get("FLOTILLA_DELIVERY") else spec.delivery,
        relay=None if env.get("FLOTILLA_RELAY") else spec.relay,
        registry=chosen_registry or spec.registry,
        events=chosen_events or spec.events,
        database=system_database,
        services=services,
        origins=origins,
    )


def _pick(
    option: str | None, env: Mapping[str, str], variable: str, key: str, origins: dict[str, str]
) -> str | None:
    """The option, else the variable (noting which, for errors), else None (the file's).

    A relative SQLite path is made absolute here, from the working directory
    of the command: the processes run in the system's directory.
    """
    for origin, value in ((f"--{key}", option), (variable, env.get(variable))):
        if value:
            origins[f"system.{key}"] = origin
            return anchor_sqlite(value, Path.cwd())
    return None

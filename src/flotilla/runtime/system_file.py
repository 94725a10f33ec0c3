"""The system file, ``flotilla.toml``: which services a system runs, how many of each, where.

::

    [system]
    name = "hello"                  # optional, default: the directory's name
    # registry = "sqlite:///..."    # optional, default: <data_dir>/registry.db
    # events = "sqlite:///..."      # optional: the event backend, default: <data_dir>/events.db
    # database = "postgresql://db/shop"  # optional: every service's, a schema each (data/url.py)
    # data_dir = ".flotilla"        # optional, relative to the system directory
    # strategy = "p2c"              # optional: how calls are balanced
    # default_timeout = 10.0        # optional: a call's deadline when nothing sets one

    [system.strategies]             # optional: per called service
    carts = "consistent_hash:cart_id"

    [services.greeter]              # the entry's name is the service's name
    class = "hello.greeter:Greeter" # module:Class, imported by each process
    replicas = 2                    # optional, 1 to 64, default 1
    env = { GREETING = "Hello" }    # optional extra environment, strings
    # database = "postgresql://app@db/greeter"  # optional; default <data_dir>/<name>.db
    # strategy, strategies, default_timeout: this service's own calls, over the system's

    [gateway]                       # optional: the HTTP gateway (flotilla.runtime.gateway_spec)
    routes = "hello.routes:ROUTES"
    port = 8080

    [events]                        # optional: how events are handled and relayed, every service
    delivery = { max_deliveries = 3, ack_wait = 5.0 }   # flotilla.events.policy.DeliveryPolicy
    relay = { lease = 2.0 }         # the outbox relays' flotilla.data.policy.RelayPolicy

    [resilience]                    # optional: policies of calls (flotilla.resilience.config)
    breaker = { failure_rate = 0.5 }
    [resilience.services.greeter]   # calls to greeter, over the system's; .methods.NAME below
    retry = { max_attempts = 2 }

``replicas`` is at most :data:`MAX_REPLICAS` (64): processes on one machine,
each an interpreter of its own; a larger number is a typo far more often than
a plan, and the supervisor holds state per replica.

A file that cannot be used is refused before anything starts, with a
:class:`~flotilla.errors.ConfigError` naming the file, the line and the
reason: ``examples/hello/flotilla.toml:7: services.greeter.replicas: Expected
`int`, got `str```.  How the line is found: :mod:`flotilla.runtime.toml_lines`.
The values read are a :class:`~flotilla.runtime.system_spec.SystemSpec`.

What this module checks is the file alone.  Whether each class imports, is a
:class:`~flotilla.service.Service` whose name is its entry's, and whether the
registry and events URLs have known schemes, is checked by
:mod:`flotilla.runtime.preflight` before ``flotilla run`` starts anything; its
errors point into the file through :meth:`SystemSpec.where`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from flotilla.balancing import DEFAULT_STRATEGY, resolve_strategy
from flotilla.calls.deadline import DEFAULT_TIMEOUT
from flotilla.data.policy import RelayPolicy
from flotilla.data.url import normalize_url
from flotilla.errors import ConfigError
from flotilla.events.policy import DeliveryPolicy
from flotilla.resilience.config import PolicyTable, policy_table
from flotilla.resolve import anchor_sqlite, default_events_url, default_registry_url
from flotilla.runtime.gateway_spec import GATEWAY_ENTRY, GatewaySpec
from flotilla.runtime.system_spec import (
    MAX_REPLICAS,
    SYSTEM_FILE,
    ServiceSpec,
    SystemSpec,
    Timeout,
)
from flotilla.runtime.toml_lines import check, error_at, find_line, syntax_error

__all__ = [
    "MAX_REPLICAS",
    "SYSTEM_FILE",
    "ServiceSpec",
    "SystemSpec",
    "load_system_file",
    "parse_system",
]

# Entry names become process names (``greeter.1``) and log prefixes.
_SERVICE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# What flotilla.runtime.serve.load_service_class accepts: a dotted module, one attribute.
_CLASS_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


class _SystemTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str | None = None
    registry: str | None = None
    events: str | None = None
    database: str | None = None
    data_dir: str = ".flotilla"
    strategy: str = DEFAULT_STRATEGY
    strategies: dict[str, str] = msgspec.field(default_factory=dict)
    default_timeout: Timeout = DEFAULT_TIMEOUT


class _EventsTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    delivery: DeliveryPolicy | None = None
    relay: RelayPolicy | None = None


class _File(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    system: _SystemTable = msgspec.field(default_factory=_SystemTable)
    # Each entry is checked on its own: msgspec does not name the dict key in
    # its error paths (``$.services[...]``), and the message must name it.
    services: dict[str, Any] = msgspec.field(default_factory=dict)
    resilience: dict[str, Any] = msgspec.field(default_factory=dict)
    """Checked by :func:`flotilla.resilience.config.policy_table`, at its lines."""
    gateway: Any = None
    """Checked as a :class:`GatewaySpec`, at its lines."""
    events: Any = None
    """Checked as an :class:`_EventsTable`, at its lines."""


def load_system_file(path: str | Path, *, data_dir: Path | None = None) -> SystemSpec:
    """Read and check the system file at ``path`` (a ``flotilla.toml`` or its directory).

    ``data_dir`` (``flotilla run --data-dir``) replaces the file's ``data_dir``.
    """
    path = Path(path)
    if path.is_dir() or path.suffix != ".toml":
        path = path / SYSTEM_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file (a system is described by a {SYSTEM_FILE})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    return parse_system(
        text, source=str(path), system_dir=path.absolute().parent, data_dir=data_dir
    )


def parse_system(
    text: str, *, source: str, system_dir: Path, data_dir: Path | None = None
) -> SystemSpec:
    """Check the system file ``text``.

    ``source`` names the file in errors; relative paths resolve from ``system_dir``;
    ``data_dir``, when given, replaces the file's (relative to the working directory).
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise syntax_error(str(exc), text, source) from None
    parsed = check(data, _File, text, source, [])
    services = {
        name: _service(name, entry, text, source, system_dir)
        for name, entry in parsed.services.items()
    }
    if not services:
        raise ConfigError(f"{source}:1: a system needs at least one [services.NAME] table")
    _check_strategies(parsed.system.strategy, parsed.system.strategies, text, source, ["system"])
    for name, spec in services.items():
        _check_strategies(spec.strategy, spec.strategies, text, source, ["services", name])
    if data_dir is not None:
        data_dir = data_dir.expanduser().absolute()
    else:
        data_dir = (system_dir / Path(parsed.system.data_dir).expanduser()).absolute()
    registry = parsed.system.registry or default_registry_url(data_dir)
    resilience = policy_table(
        parsed.resilience,
        services=services,
        error=lambda path, reason: error_at(text, source, path, reason),
    )
    gateway = None
    if parsed.gateway is not None:
        gateway = check(parsed.gateway, GatewaySpec, text, source, [GATEWAY_ENTRY])
        if GATEWAY_ENTRY in services:
            reason = "a service may not be named 'gateway' when the system has a [gateway]"
            raise error_at(text, source, ["services", GATEWAY_ENTRY], reason)
    policies = _EventsTable()
    if parsed.events is not None:
        policies = check(parsed.events, _EventsTable, text, source, ["events"])
    events = parsed.system.events or default_events_url(data_dir)
    database = parsed.system.database
    if database is not None:
        database = anchor_sqlite(database, system_dir)
        try:
            normalize_url(database)
        except ConfigError as exc:
            raise error_at(text, source, ["system", "database"], exc.message) from None
    return SystemSpec(
        name=parsed.system.name or system_dir.absolute().name,
        data_dir=data_dir,
        registry=anchor_sqlite(registry, system_dir),
        events=anchor_sqlite(events, system_dir),
        database=database,
        services=services,
        source=source,
        lines=_key_lines(text, services, resilience),
        strategy=parsed.system.strategy,
        strategies=parsed.system.strategies,
        default_timeout=parsed.system.default_timeout,
        resilience=resilience,
        gateway=gateway,
        delivery=policies.delivery,
        relay=policies.relay,
    )


def _key_lines(
    text: str, services: Mapping[str, ServiceSpec], resilience: PolicyTable
) -> dict[str, int]:
    """The line of each key a later check (:mod:`flotilla.runtime.preflight`) may blame."""
    keys = [["system", key] for key in ("registry", "events", "database")]
    keys.append([GATEWAY_ENTRY, "routes"])
    for name in services:
        keys += [["services", name], *(["services", name, key] for key in ("class", "replicas"))]
    for name, methods in resilience.methods.items():
        keys += [["resilience", "services", name, "methods", method] for method in methods]
    lines = text.splitlines()
    return {".".join(key): find_line(lines, key) for key in keys}


def _check_strategies(
    strategy: str | None, strategies: dict[str, str], text: str, source: str, path: list[str]
) -> None:
    """Refuse a balancing strategy name that no process could use, at its line."""
    named = [(["strategy"], strategy), *((["strategies", k], v) for k, v in strategies.items())]
    for key, spec in named:
        if spec is None:
            continue
        try:
            resolve_strategy(spec)
        except ConfigError as exc:
            raise error_at(text, source, path + key, exc.message) from None


def _service(name: str, entry: Any, text: str, source: str, system_dir: Path) -> ServiceSpec:
    path = ["services", name]
    if not _SERVICE_NAME.match(name):
        raise error_at(text, source, path, f"service name must match {_SERVICE_NAME.pattern}")
    env = entry.get("env") if isinstance(entry, dict) else None
    if isinstance(env, dict):
        # A bad value here is reported by msgspec as `env[...]`; name the key instead.
        for key, value in env.items():
            check(value, str, text, source, [*path, "env", key])
    spec = check(entry, ServiceSpec, text, source, path)
    if not _CLASS_SPEC.match(spec.class_):
        reason = f"{spec.class_!r} is not 'module:Class'"
        raise error_at(text, source, [*path, "class"], reason)
    if spec.database is not None:
        database = anchor_sqlite(spec.database, system_dir)
        try:
            normalize_url(database)
        except ConfigError as exc:
            raise error_at(text, source, [*path, "database"], exc.message) from None
        spec = msgspec.structs.replace(spec, database=database)
    return spec

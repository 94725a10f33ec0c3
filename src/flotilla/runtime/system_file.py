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
`int`, got `str```.  The line is found by scanning the text for the table and
the key (TOML parsers keep no positions), so it is the line of the key when
the key is written on a line of its own, else that of its table.

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
from typing import Annotated, Any, TypeVar

import msgspec

from flotilla.balancing import DEFAULT_STRATEGY, resolve_strategy
from flotilla.calls.deadline import DEFAULT_TIMEOUT
from flotilla.data.policy import RelayPolicy
from flotilla.data.url import database_env_name, normalize_url
from flotilla.errors import ConfigError
from flotilla.events.policy import DeliveryPolicy
from flotilla.resilience.config import PolicyTable, policy_table
from flotilla.resolve import anchor_sqlite, default_events_url, default_registry_url
from flotilla.runtime.gateway_spec import GATEWAY_ENTRY, GatewaySpec

__all__ = [
    "MAX_REPLICAS",
    "SYSTEM_FILE",
    "ServiceSpec",
    "SystemSpec",
    "load_system_file",
    "parse_system",
]

SYSTEM_FILE = "flotilla.toml"
MAX_REPLICAS = 64
"""The most processes one ``[services.NAME]`` entry may ask for."""

T = TypeVar("T")

# Entry names become process names (``greeter.1``) and log prefixes.
_SERVICE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# What flotilla.runtime.serve.load_service_class accepts: a dotted module, one attribute.
_CLASS_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)$")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")


_Timeout = Annotated[float, msgspec.Meta(gt=0, le=86400)]


class ServiceSpec(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    rename={"class_": "class"},
):
    """One ``[services.NAME]`` table: what to run and how many copies."""

    class_: str
    """``"package.module:Class"``, a :class:`~flotilla.service.Service` subclass."""
    replicas: Annotated[int, msgspec.Meta(ge=1, le=MAX_REPLICAS)] = 1
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """Added to the environment of each of the service's processes."""
    strategy: str | None = None
    """How this service's own calls are balanced (default: the system's)."""
    strategies: dict[str, str] = msgspec.field(default_factory=dict)
    """Per service it calls, over the system's ``strategies``."""
    default_timeout: _Timeout | None = None
    """The deadline of its calls when neither caller nor method sets one."""
    database: str | None = None
    """The service's database URL (relative SQLite paths: from the system file's folder)."""


class SystemSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A system file, read and resolved: every path absolute, every default filled in."""

    name: str
    data_dir: Path
    registry: str
    services: dict[str, ServiceSpec]
    """By entry name, in the order of the file."""
    events: str = ""
    """The event backend URL ('' : ``events.db`` in the data directory)."""
    database: str | None = None
    """The whole system's database URL, shared out per service by
    :func:`flotilla.data.url.service_url` (None: each service its own default)."""
    origins: dict[str, str] = msgspec.field(default_factory=dict)
    """Keys whose value came from elsewhere than the file (``system.registry`` ->
    ``"--registry"``...), so that errors about them name where it came from."""
    source: str = SYSTEM_FILE
    """The file, as named in errors."""
    lines: dict[str, int] = msgspec.field(default_factory=dict)
    """The line of each checked key (``services.greeter.class``, ``system.registry``...)."""
    strategy: str = DEFAULT_STRATEGY
    """How calls are balanced, unless ``strategies`` names the called service."""
    strategies: dict[str, str] = msgspec.field(default_factory=dict)
    default_timeout: float = DEFAULT_TIMEOUT
    resilience: PolicyTable = msgspec.field(default_factory=PolicyTable)
    """The ``[resilience]`` section, every level merged."""
    gateway: GatewaySpec | None = None
    """The ``[gateway]`` table, if the system has an HTTP gateway."""
    delivery: DeliveryPolicy | None = None
    """``[events] delivery``: every consumer's (None: the default, or ``FLOTILLA_DELIVERY``)."""
    relay: RelayPolicy | None = None
    """``[events] relay``: every outbox relay's (None: the default, or ``FLOTILLA_RELAY``)."""

    def call_environment(self, entry: str) -> dict[str, str]:
        """The ``FLOTILLA_*`` variables that tell a process of ``entry`` how to call others
        (what :meth:`flotilla.runtime.settings.Settings.from_env` reads back).

        ``entry`` may be :data:`GATEWAY_ENTRY`, whose process also gets its
        table as ``FLOTILLA_GATEWAY`` (JSON).
        """
        if entry == GATEWAY_ENTRY and self.gateway is not None:
            service = ServiceSpec(class_="", env=self.gateway.env)
        else:
            service = self.services[entry]
        strategies = {**self.strategies, **service.strategies}
        env = {
            "FLOTILLA_STRATEGY": service.strategy or self.strategy,
            "FLOTILLA_STRATEGIES": msgspec.json.encode(strategies).decode(),
            "FLOTILLA_DEFAULT_TIMEOUT": repr(service.default_timeout or self.default_timeout),
            "FLOTILLA_RESILIENCE": msgspec.json.encode(self.resilience).decode(),
            # Each replica an ops port of its own; `flotilla ps` finds it in the registry.
            "FLOTILLA_OPS_PORT": "0",
        }
        if service.database is not None:
            env[database_env_name(entry)] = service.database
        if entry == GATEWAY_ENTRY and self.gateway is not None:
            env["FLOTILLA_GATEWAY"] = msgspec.json.encode(self.gateway).decode()
        if self.delivery is not None:
            env["FLOTILLA_DELIVERY"] = msgspec.json.encode(self.delivery).decode()
        if self.relay is not None:
            env["FLOTILLA_RELAY"] = msgspec.json.encode(self.relay).decode()
        return env

    def where(self, key: str) -> str:
        """``file:line: key``, the start of an error about ``key`` (or the option or
        variable that gave its value, see :attr:`origins`)."""
        if key in self.origins:
            return self.origins[key]
        return f"{self.source}:{self.lines.get(key, 1)}: {key}"


class _SystemTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str | None = None
    registry: str | None = None
    events: str | None = None
    database: str | None = None
    data_dir: str = ".flotilla"
    strategy: str = DEFAULT_STRATEGY
    strategies: dict[str, str] = msgspec.field(default_factory=dict)
    default_timeout: _Timeout = DEFAULT_TIMEOUT


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
        raise _syntax_error(str(exc), text, source) from None
    parsed = _check(data, _File, text, source, [])
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
        error=lambda path, reason: _error(text, source, path, reason),
    )
    gateway = None
    if parsed.gateway is not None:
        gateway = _check(parsed.gateway, GatewaySpec, text, source, [GATEWAY_ENTRY])
        if GATEWAY_ENTRY in services:
            reason = "a service may not be named 'gateway' when the system has a [gateway]"
            raise _error(text, source, ["services", GATEWAY_ENTRY], reason)
    policies = _EventsTable()
    if parsed.events is not None:
        policies = _check(parsed.events, _EventsTable, text, source, ["events"])
    events = parsed.system.events or default_events_url(data_dir)
    database = parsed.system.database
    if database is not None:
        database = anchor_sqlite(database, system_dir)
        try:
            normalize_url(database)
        except ConfigError as exc:
            raise _error(text, source, ["system", "database"], exc.message) from None
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
    return {".".join(key): _find_line(lines, key) for key in keys}


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
            raise _error(text, source, path + key, exc.message) from None


def _service(name: str, entry: Any, text: str, source: str, system_dir: Path) -> ServiceSpec:
    path = ["services", name]
    if not _SERVICE_NAME.match(name):
        raise _error(text, source, path, f"service name must match {_SERVICE_NAME.pattern}")
    env = entry.get("env") if isinstance(entry, dict) else None
    if isinstance(env, dict):
        # A bad value here is reported by msgspec as `env[...]`; name the key instead.
        for key, value in env.items():
            _check(value, str, text, source, [*path, "env", key])
    spec = _check(entry, ServiceSpec, text, source, path)
    if not _CLASS_SPEC.match(spec.class_):
        reason = f"{spec.class_!r} is not 'module:Class'"
        raise _error(text, source, [*path, "class"], reason)
    if spec.database is not None:
        database = anchor_sqlite(spec.database, system_dir)
        try:
            normalize_url(database)
        except ConfigError as exc:
            raise _error(text, source, [*path, "database"], exc.message) from None
        spec = msgspec.structs.replace(spec, database=database)
    return spec


def _check(value: Any, type_: type[T], text: str, source: str, path: list[str]) -> T:
    """``msgspec.convert(value, type_)``, with a failure reported at its file line."""
    try:
        return msgspec.convert(value, type_)
    except ConfigError as exc:  # a policy's own check (flotilla.events.policy...)
        raise _error(text, source, path, exc.message) from None
    except msgspec.ValidationError as exc:
        reason, _, where = str(exc).partition(" - at `$")
        inner = [part for part in re.split(r"[.\[]", where.rstrip("`")) if part and part != "...]"]
        unknown = _UNKNOWN_FIELD.search(reason)
        if unknown:
            inner.append(unknown.group(1))  # point at the offending key, not its table
        raise _error(text, source, path + inner, reason) from None


def _error(text: str, source: str, path: list[str], reason: str) -> ConfigError:
    where = ".".join(path)
    line = _find_line(text.splitlines(), path)
    return ConfigError(
        f"{source}:{line}: {where}: {reason}" if where else f"{source}:{line}: {reason}"
    )


def _syntax_error(message: str, text: str, source: str) -> ConfigError:
    position = _TOML_POSITION.search(message)
    if position:
        reason = _TOML_POSITION.sub("", message)
        return ConfigError(f"{source}:{position.group(1)}: {reason} (column {position.group(2)})")
    line = max(1, len(text.splitlines()))
    return ConfigError(f"{source}:{line}: {_TOML_AT_END.sub('', message)} (at end of file)")


# -- finding the line of a key -------------------------------------------------------------


def _find_line(lines: list[str], path: list[str]) -> int:
    """The 1-based line defining ``path``: its key, else the nearest enclosing table, else 1."""
    for depth in range(len(path), -1, -1):
        span = _table_span(lines, path[:depth])
        if span is None:
            # ``[services.x]`` defines ``services`` too, without a header of its own.
            below = _first_header_under(lines, path[:depth])
            if below is not None:
                return below
            continue
        start, end = span
        # Longest dotted key first: ``greeter.replicas = 2`` inside ``[services]``.
        for stop in range(len(path), depth, -1):
            found = _key_line(lines, start, end, path[depth:stop])
            if found is not None:
                return found
        return start if depth else 1
    return 1  # not reached: the root table always exists


def _table_span(lines: list[str], keys: list[str]) -> tuple[int, int] | None:
    """``(header line, end)`` of table ``[keys]`` (1-based header; 0 for the root), or None."""
    start = 0 if not keys else None
    for number, line in enumerate(lines, 1):
        header = _header_keys(line)
        if header is None:
            continue
        if start is not None:
            return start, number - 1
        if header == keys:
            start = number
    return None if start is None else (start, len(lines))


def _first_header_under(lines: list[str], keys: list[str]) -> int | None:
    for number, line in enumerate(lines, 1):
        header = _header_keys(line)
        if header is not None and header[: len(keys)] == keys:
            return number
    return None


def _header_keys(line: str) -> list[str] | None:
    match = re.match(r"^\s*\[\[?\s*(.+?)\s*\]\]?\s*(#.*)?$", line)
    if match is None:
        return None
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[^.\s]+", match.group(1))
    return [part.strip("\"'") for part in parts]


def _key_line(lines: list[str], start: int, end: int, keys: list[str]) -> int | None:
    def one(key: str) -> str:
        escaped = re.escape(key)
        return f"(?:{escaped}|\"{escaped}\"|'{escaped}')"

    pattern = re.compile(r"^\s*" + r"\s*\.\s*".join(one(key) for key in keys) + r"\s*=")
    for number in range(start + 1, end + 1):
        if pattern.match(lines[number - 1]):
            return number
    return None

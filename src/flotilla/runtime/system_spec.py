"""A system, read and resolved: the values a ``flotilla.toml`` describes.

:class:`SystemSpec` and its :class:`ServiceSpec` entries are what the rest of
the runtime uses (the supervisor, preflight, the backends); reading and
checking the file that gives them is :mod:`flotilla.runtime.system_file`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from flotilla.balancing import DEFAULT_STRATEGY
from flotilla.calls.deadline import DEFAULT_TIMEOUT
from flotilla.data.policy import RelayPolicy
from flotilla.data.url import database_env_name
from flotilla.events.policy import DeliveryPolicy
from flotilla.resilience.config import PolicyTable
from flotilla.runtime.gateway_spec import GATEWAY_ENTRY, GatewaySpec

__all__ = ["MAX_REPLICAS", "SYSTEM_FILE", "ServiceSpec", "SystemSpec", "Timeout"]

SYSTEM_FILE = "flotilla.toml"
MAX_REPLICAS = 64
"""The most processes one ``[services.NAME]`` entry may ask for."""

Timeout = Annotated[float, msgspec.Meta(gt=0, le=86400)]
"""A ``default_timeout`` in seconds: more than 0, at most a day."""


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
    default_timeout: Timeout | None = None
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

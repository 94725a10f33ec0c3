"""Service discovery: where the instances of a service are, and whether they are alive.

A registry is anything that implements :class:`Registry`; the built-in ones
are named by URL so configuration can pick one through :func:`open_registry`::

    memory://                      this process only (tests, single-node apps)
    sqlite:///abs/path.db          one file shared by every process on a machine
    sqlite://relative/path.db      the same, relative to the working directory
    path/to/file.db                shorthand for sqlite://path/to/file.db
"""

from __future__ import annotations

from flotilla.clock import Clock
from flotilla.registry.base import Health, Instance, MethodInfo, Registry
from flotilla.registry.memory import MemoryRegistry
from flotilla.registry.sqlite import SqliteRegistry
from flotilla.resolve import BackendFamily

__all__ = [
    "REGISTRIES",
    "Health",
    "Instance",
    "MemoryRegistry",
    "MethodInfo",
    "Registry",
    "SqliteRegistry",
    "open_registry",
]

# A backend that needs an extra (nats, etcd) is added here with its extra's
# name; its module is imported only when its URL is used.
REGISTRIES: BackendFamily[Registry] = BackendFamily(
    "registry",
    {
        "memory": "flotilla.registry.memory:MemoryRegistry.from_url",
        "sqlite": "flotilla.registry.sqlite:SqliteRegistry.from_url",
    },
)


def open_registry(url: str, *, clock: Clock | None = None) -> Registry:
    """A new registry for ``url`` (see the module docstring for the forms).

    Raises :class:`~flotilla.errors.ConfigError` for a URL of no known scheme.
    """
    return REGISTRIES.open(url, clock=clock)
